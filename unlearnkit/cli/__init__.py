"""The command line: LightningCLI over the base classes, plus report / demo / generate."""
