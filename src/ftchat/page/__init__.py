"""The Gradio page: the chat tab, the Guide tab, rendering answers, uploads and serving."""
