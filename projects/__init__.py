"""New tasks dropped in as folders (see docs/adding_a_task.md); reached through custom_imports."""
