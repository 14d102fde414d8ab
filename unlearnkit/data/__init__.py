"""Data: on-disk face formats, forget/retain splits, samplers and the LightningDataModule."""
