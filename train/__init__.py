"""Training, evaluation and export. Never imported by handlers/."""
