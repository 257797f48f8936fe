"""Models: the timm backbone factory and the DermClassifier LightningModule."""
