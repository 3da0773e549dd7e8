pytest_plugins = ("xenddd.sim.pytest_plugin",)
