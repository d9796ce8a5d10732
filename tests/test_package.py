"""The optimizers stand alone: ``import gofau`` needs torch only and never imports the lab."""
import subprocess
import sys
import textwrap

LAB_ONLY = ("pandas", "matplotlib", "seaborn", "torchvision", "scipy", "yaml", "IPython", "gofau.lab")


def test_gofau_trains_a_model_with_the_lab_dependencies_absent():
    # None in sys.modules makes a module absent: importing it raises ModuleNotFoundError
    script = textwrap.dedent(f"""
        import sys
        sys.modules.update(dict.fromkeys({LAB_ONLY!r}))
        import torch, gofau
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        opt = gofau.HAdam(gofau.param_groups(model, rule="additive"), lr=1e-2, gamma=0.5)
        x = torch.randn(64, 4)
        y = x.sum(1, keepdim=True)
        losses = []
        for _ in range(100):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0], losses
        print(sorted(m for m in {LAB_ONLY!r} if sys.modules.get(m) is not None))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_import_gofau_imports_no_lab_dependency():
    script = f"import sys, gofau; print(sorted(m for m in {LAB_ONLY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
