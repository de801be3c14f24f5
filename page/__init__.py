"""The Space's page glue beside app.py: inputs, error messages, result files and texts (no pipeline logic).

app.py builds the page and holds its handlers; these modules hold what it needs from Gradio and the file system.
They import the pipeline only through its public API (``from pipeline import …``), and pipeline/ never imports them.
"""
