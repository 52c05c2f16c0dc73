"""The contracts that cross process boundaries: input lines, jobs, decisions, results, config."""
