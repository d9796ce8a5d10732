"""Draw book/images/step_size.png: the size of one step against the update direction u.

Pure formulas (see book/method.md), no training: additive |eta * u| against multiplicative
eta_out * |theta| * |tanh(eta_in * u)| for several weight magnitudes |theta|.
Run from the repository root: python book/step_size_figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ETA, ETA_OUT, ETA_IN = 0.1, 0.1, 1.0
THETAS = (0.05, 0.2, 1.0)


def main(path: Path = Path(__file__).with_name("images") / "step_size.png") -> Path:
    u = np.linspace(0.0, 4.0, 401)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    ax.plot(u, ETA * u, color="black", label=rf"additive: $\eta u$ ($\eta$={ETA})")
    for theta in THETAS:
        ax.plot(u, ETA_OUT * theta * np.tanh(ETA_IN * u),
                label=rf"multiplicative: $\eta_{{out}}|\theta|\tanh(\eta_{{in}}u)$, $|\theta|$={theta}")
    ax.set_xlabel(r"update direction $u = m_t\,l_t$")
    ax.set_ylabel(r"step size $|\theta_{t+1}-\theta_t|$")
    ax.set_title(rf"One step of each rule ($\eta_{{out}}$={ETA_OUT}, $\eta_{{in}}$={ETA_IN})")
    ax.set_ylim(0, 0.2)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(main())
