"""`training_batches`: the Grain stream gives `batches`' batches (uint8 images), from any step, in each
process's share."""

import numpy as np
import pytest

from jaxcnn import data


def reference(dataset, batch_size, seed, epochs, **process):
    return [
        b
        for epoch in range(epochs)
        for b in data.batches(dataset, batch_size, seed=seed, epoch=epoch, normalized=False, **process)
    ]


@pytest.mark.parametrize("process_index, process_count", [(0, 1), (1, 2)])
def test_the_stream_from_any_step_is_batches_of_each_epoch(process_index, process_count):
    dataset = data.synthetic("train", image_shape=(4, 4, 1), num_examples=50)
    process = {"process_index": process_index, "process_count": process_count}
    expected = reference(dataset, 8, 3, epochs=3, **process)  # 6 batches an epoch (2 examples left over)
    stream = data.training_batches(
        dataset, 8, seed=3, steps_per_epoch=6, start_step=4, stop_step=15, **process
    )
    got = list(stream)
    stream.close()
    assert len(got) == 11
    for batch, want in zip(got, expected[4:15], strict=True):
        for key in want:
            np.testing.assert_array_equal(batch[key], want[key])


def test_bad_arguments_are_named():
    dataset = data.synthetic("train", image_shape=(4, 4, 1), num_examples=20)
    options = {"seed": 0, "start_step": 0, "stop_step": 4}
    with pytest.raises(ValueError, match="steps_per_epoch 3 batches of 8 exceed the 20 examples"):
        data.training_batches(dataset, 8, steps_per_epoch=3, **options)
    with pytest.raises(ValueError, match="workers must be an int >= 0"):
        data.training_batches(dataset, 8, steps_per_epoch=2, workers=-1, **options)
    with pytest.raises(ValueError, match="stop_step must be an int >= 5"):
        data.training_batches(dataset, 8, steps_per_epoch=2, **{**options, "start_step": 5})
