"""The routing decision, pure Python: features, classifiers, tier policy, evaluation."""
