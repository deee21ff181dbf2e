"""``python run.py bench cameras``: several cameras in one pipeline (measure, goals and table, command)."""
