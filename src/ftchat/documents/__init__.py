"""Documents: reading the corpus into sections, cutting them into chunks, the guide's sample
questions, and the book view (the table of contents the page and `ftchat guide` show)."""
