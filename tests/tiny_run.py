"""The overrides of the tiny synthetic run that several test modules train once (in-process,
``train_in_process`` of conftest.py): 700 images at 32 px, one epoch of 3 batches."""

TINY_RUN = [
    "data.source.n_images=700",
    "data.image_size=32",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=3",
]
