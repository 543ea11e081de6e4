"""Claude Code transcripts, written the way Claude Code writes them: the one generator
behind ``agnes-activity demo``, the tests and the benchmarks.

- :mod:`service.synthetic.lines`: single lines (prompts, responses, tool calls and
  results) and a file's bytes.
- :mod:`service.synthetic.corpus`: whole trees of ``projects/`` with every awkward case
  real trees have, and the numbers a correct accounting must give for them.
"""
