"""Pure diffusion math: schedules, conversions, guidance, sampler steps, distillation targets."""
from .formulas import *  # noqa: F401,F403
from .schedules import CosineSchedule, DiscreteSchedule, FlowMatchSchedule, Schedule, schedule_from_config  # noqa: F401
