"""Task and suite specs: schema and registry."""
from layerbench.specs.registry import all_suites, all_tasks, get_suite, get_task, load_suite_file, load_task_file, malformed_specs, validate_path
from layerbench.specs.schema import SuiteSpec, TaskSpec

__all__ = ["SuiteSpec", "TaskSpec", "all_suites", "all_tasks", "get_suite", "get_task", "load_suite_file", "load_task_file", "malformed_specs", "validate_path"]
