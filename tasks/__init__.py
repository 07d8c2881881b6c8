"""Tasks: one file per task, registered with @register_task.

Adding a task:
1. create tasks/<name>.py;
2. subclass tokenbench.contract.task.Task and decorate with @register_task('<name>');
3. the contract tests pick it up.
"""
