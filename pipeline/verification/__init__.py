"""Known-answer checks of the real weights: answers known without ever having seen the weights (issue 13).

It sits above :mod:`pipeline.models` (it loads and runs the networks), so :mod:`pipeline.weights` never imports it;
``python -m pipeline.weights verify`` reaches it through the package's ``__main__`` (the command-line entry point).
"""
