"""Studying and teaching with the guide: quiz questions, grading, progress, worksheets."""
