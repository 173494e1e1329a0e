"""The IntentLens model family: the Transformer, the baselines and their saved artifacts."""
