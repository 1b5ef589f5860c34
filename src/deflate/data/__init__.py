"""Raw data to validated tables: format adapters, splits, synthetic data, images and image tokens."""
