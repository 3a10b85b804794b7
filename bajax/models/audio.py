"""What the audio kinds (tokenizer, flow) share: the padded frame count of a batch and their Grain dataset."""

from __future__ import annotations

from bajax.models.spec import rows_per_process


def code_frames(data_cfg) -> int:
    """Padded 80 ms code frames of a training batch (crop length, or the largest bucket)."""
    a = data_cfg.audio
    seconds = a.crop_seconds if a.mode == "crop" else max(a.bucket_seconds)
    return max(1, int(seconds * 12.5))


def dataset_of(view: str):
    """A kind's `make_dataset`: audio batches of what `bajax.data.pipeline.<view>` reads of each segment
    (imported on first use: reading a config does not start Grain)."""

    def make_dataset(cfg, process_index: int, process_count: int, split: str):
        from bajax.data import pipeline

        return pipeline.audio_dataset(cfg.data, batch_size=rows_per_process(cfg.train, process_count),
                                      view=getattr(pipeline, view), process_index=process_index,
                                      process_count=process_count, split=split)

    return make_dataset
