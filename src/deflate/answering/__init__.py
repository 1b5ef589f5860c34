"""From a trained model to answers: the engine, decoding, candidate scores, the lexical scorer, predict rows, the MLflow model."""
