"""The DEFLATE stages, one module each (the scripts in the repo's ``stages/`` call their ``run``):
train_generator -> harvest_negatives -> train_discriminator -> evaluate (paper Fig. 2), and for
closed-vocabulary data train_lexical and evaluate_candidates."""
