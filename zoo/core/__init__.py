"""What every other part of zoo builds on: the user-error base class, config checks, the
name -> builder registry, and figures. Imports nothing else from zoo."""
