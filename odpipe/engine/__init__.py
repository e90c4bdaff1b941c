"""The training and run machinery every task uses: the Keras epoch loop and models, the training
journal, checkpoints, distribution strategies, the train-run wrapper, MLflow runs, results, the
quality gate, the pyfunc model's I/O, latency and confusion matrices. Imports only ``core`` and
``data``."""
