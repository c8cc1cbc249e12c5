"""Graph capture, the pass pipeline and its fusion passes.

Entry point: `passes.compile.compile_graph(model, PassConfig(...)) -> (PassedModel, CompileTrace)`.
"""
