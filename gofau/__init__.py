"""gofau: the Generic Optimization Framework for Alternative Updates (Kirtas, Passalis, Tefas, 2024).

An optimizer step is a direction u = phi * psi from a base optimizer (SGD, Adam, Adagrad, RMSprop)
fed to an update rule: additive theta - eta u, multiplicative theta - eta_out |theta| tanh(eta_in u),
or their gamma-weighted hybrid. Its relatives Madam, Fromage, LARS and LAMB are built from the
same directions and rules (``gofau.relatives``).
"""
from .groups import param_groups
from .optimizer import GOFAU
from .relatives import LAMB, LARS, Fromage, Madam
from .presets import (HSGD, SGD, Adagrad, Adam, HAdagrad, HAdam, HMSGD, HRMSprop, MAdagrad, MAdam, MRMSprop, MSGD,
                      RMSprop)

__version__ = "0.1.0"
__all__ = ["GOFAU", "param_groups", "MSGD", "HSGD", "HMSGD", "MAdam", "HAdam", "MAdagrad", "HAdagrad", "MRMSprop",
           "HRMSprop", "SGD", "Adam", "Adagrad", "RMSprop", "Madam", "Fromage", "LARS", "LAMB"]
