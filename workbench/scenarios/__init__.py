"""Deployment scenarios: regional precision policies, calibration mismatch, serving cost, deployment bundles."""
from .bundle import BundleError, export_bundle, verify_bundle
from .cost import CostInputError, cost_table, engine_hours_per_day, monthly_cost
from .mismatch import MismatchMatrix, calibration_mismatch
from .policy import PolicyTable, RegionChoice, RegionPolicy, choose, default_policies

__all__ = ["BundleError", "CostInputError", "MismatchMatrix", "PolicyTable", "RegionChoice", "RegionPolicy",
           "calibration_mismatch", "choose", "cost_table", "default_policies", "engine_hours_per_day",
           "export_bundle", "monthly_cost", "verify_bundle"]
