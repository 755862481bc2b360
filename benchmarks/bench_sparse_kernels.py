"""Where PyTorch's CPU sparse CSR matmul beats a dense linear layer: one Transformer-big FFN matrix
(4096 x 1024 and 1024 x 4096) at several sparsities and batch sizes, dense and CSR timed
alternately, median of 30. Context for `python -m gapbench speed`, which measures whole models.

    python benchmarks/bench_sparse_kernels.py
"""

import functools
import statistics
import time
import warnings

import torch


def main() -> None:
    warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
    torch.manual_seed(0)
    print(f"{torch.get_num_threads()} threads; ms per call, dense vs CSR")
    print(
        "| matrix | sparsity | batch | dense (ms) | CSR (ms) | speed-up |\n|---|---|---|---|---|---|"
    )
    for out_features, in_features in ((4096, 1024), (1024, 4096)):
        for sparsity in (0.9, 0.95, 0.99):
            weight = torch.randn(out_features, in_features)
            weight[torch.rand_like(weight) < sparsity] = 0
            csr = weight.to_sparse_csr()
            for batch in (1, 256):
                x = torch.randn(batch, in_features)
                dense = functools.partial(torch.nn.functional.linear, x, weight)
                sparse = functools.partial(torch.mm, csr, x.t())
                times: dict[str, list[float]] = {"dense": [], "csr": []}
                for i in range(33):
                    for key, fn in (("dense", dense), ("csr", sparse)):
                        start = time.perf_counter()
                        fn()
                        if i >= 3:
                            times[key].append(time.perf_counter() - start)
                d, s = statistics.median(times["dense"]), statistics.median(times["csr"])
                print(
                    f"| {out_features}x{in_features} | {sparsity} | {batch} | {1e3 * d:.2f} | {1e3 * s:.2f} | {d / s:.2f}x |"
                )


if __name__ == "__main__":
    main()
