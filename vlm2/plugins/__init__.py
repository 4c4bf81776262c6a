"""The paper's tasks, one folder each; reached through ``custom_imports``, never imported by the core."""
