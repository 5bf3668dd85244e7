"""Engines: the only code that runs tools (pip/venv, conda, docker, apptainer, shell)."""
