"""Surrogate training throughput (samples per second) of the book's networks, in one run.

- the paper's LSTM (window 20, 5 layers of 128, d = 20) and chapter 4's book-scale one (1 x 32, well-posed);
- the periodic convolutional surrogate of the DA-inside-training chapter (d = 40, window 1);
- the KdV DeepONet (window 5, 100 sensors).

Each is trained for two epochs of 16,384 samples (batch 128) without cache; the second
epoch's rate is reported (whole training steps: window gathering, forward, backward, Adam).

Run: ``python benchmarks/bench_training.py`` (results go to ``benchmarks/results/training.*``).
"""

from __future__ import annotations

from _common import write_results
from scoreda.experiments.compare import markdown_table
from scoreda.surrogates import conv, data, deeponet, lstm, train

CASES = [
    ("LSTM, paper (5 x 128)", data.Lorenz96Data(n_trajectories=20, n_steps=500),
     lstm.LSTMConfig(d=20, window=20, hidden=128, layers=5)),
    ("LSTM, book (1 x 32)", data.Lorenz96Data(n_trajectories=20, n_steps=500),
     lstm.LSTMConfig(d=20, window=20, hidden=32, layers=1, well_posed=True)),
    ("periodic conv (3 x 32)", data.Lorenz96Data(n_trajectories=20, n_steps=500, dt=0.05, d=40),
     conv.ConvConfig(d=40)),
    ("DeepONet (KdV)", data.KdVData(n_trajectories=4, n_steps=200), deeponet.DeepONetConfig()),
]


def main() -> None:
    rows = []
    config = train.TrainConfig(epochs=2, batch_size=128, samples_per_epoch=16_384, patience=5)
    for name, data_config, model_config in CASES:
        trajectories = data.make(data_config)
        result = train.train(data_config, model_config, config, cache=False, progress=False,
                             trajectories=trajectories)
        rows.append({"network": name, "samples_per_s": result.history[-1]["samples_per_second"]})
        print(rows[-1])
    md = [
        "# Training: throughput of the surrogates",
        "",
        "Two epochs of 16,384 samples, batch 128, Adam, float32, on this machine's CPU; the rate of "
        "the second epoch.",
        "",
        markdown_table(
            ["network", "training (samples/s)"],
            [[r["network"], f"{r['samples_per_s']:,.0f}"] for r in rows],
        ),
        "",
    ]
    path = write_results("training", rows, "\n".join(md))
    print(path.read_text())


if __name__ == "__main__":
    main()
