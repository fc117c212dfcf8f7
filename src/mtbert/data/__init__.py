from mtbert.data.multitask import multitask_batches

__all__ = ["multitask_batches"]
