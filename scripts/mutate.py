"""A mutation pass over the core: plant one small bug at a time, run the tests that exercise
that module, and report which bugs the suite notices. Over 400 lines: most of it is the list of
mutants, one entry per planted bug.

    python scripts/mutate.py                      # every mutant (12 min on 2 quiet cores, ~80 on busy ones)
    python scripts/mutate.py --module stats       # the mutants of one module (substring match)
    python scripts/mutate.py --only Q01,S05       # chosen mutants
    python scripts/mutate.py --list               # the mutants, nothing run
    python scripts/mutate.py --json results.json  # also write the results

Each mutant is a text replacement that must match its module's source exactly once (the list
fails loudly when the code moves on). Nothing in the checkout is modified: the packages and
tests are copied to a temporary folder, the mutant is written into the copy, the module's test
files run there (`pytest -x`, one worker, with a timeout, bytecode caching off so a mutant is
always recompiled), and the copy's file is restored and checked byte for byte before the next.

A mutant is `killed` when a test fails (or the run times out), `survived` when every test
passes. Mutants declared `equivalent` (no behaviour change, reason given) are reported apart
and left out of the score.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPY = ("interp", "circuits", "probes", "tests", "pyproject.toml", "README.md")
LINK = ("interp/checkpoints",)   # large and never mutated: symlinked into the copy


@dataclass(frozen=True)
class Mutant:
    id: str
    module: str
    what: str
    old: str
    new: str
    equivalent: str = ""          # why the mutant cannot change behaviour


# the seed protocol's tests, less the two that import scripts/ (not in the mutation copy)
PROTOCOL_TESTS = [
        "tests/test_evaluate_protocol.py",
        "--deselect=tests/test_evaluate_protocol.py::test_the_shipped_stages_trained_only_on_rows_of_the_protocols_training_split",
        "--deselect=tests/test_evaluate_protocol.py::test_the_campaigns_stop_rule"]
# the command-line tests (subprocesses) are left out: they add minutes per mutant and
# exercise these modules through the same functions
ABLATION_TESTS = [
        "tests/test_ablation_controls.py",            # the controls' own tests (#22), fast
        "tests/test_oracles_ablation.py", "tests/test_ablation.py",
        "--deselect=tests/test_ablation.py::test_cli_writes_tables_json_and_a_self_contained_page",
        "--deselect=tests/test_ablation.py::test_cli_errors_are_one_line"]
# patching: the decoder tests against TransformerLens and the exact linear toy; the T5
# and command-line tests take minutes and no mutant touches T5-only code
PATCHING_TESTS = [
        "tests/test_oracles_patching.py",
        "tests/test_patching.py::test_exact_patching_equals_transformer_lens",
        "tests/test_patching.py::test_noising_equals_transformer_lens_with_inputs_swapped",
        "tests/test_patching.py::test_attribution_equals_exact_patching_on_a_linear_toy_model",
        "tests/test_patching.py::test_corrupted_pairs_are_valid_equations_of_one_layout"]

BAD = "tests/test_bad_inputs.py::test_bad_input_is_one_line_exit_2_and_nothing_changes"
TRACR_TESTS = [
        "tests/test_tracr_known.py",
        "--deselect=tests/test_tracr_known.py::test_docs_state_each_model_s_sizes_and_edge_counts",
        "--deselect=tests/test_tracr_known.py::test_the_compile_script_refuses_an_unknown_program_in_one_line_without_jax"]

#: the test files run for each module's mutants, fastest first (pytest -x stops at the first
#: failure); files that do not exist (yet) are skipped
TESTS = {
    "interp/hooks.py": ["tests/test_hooks.py"],
    "interp/stats.py": ["tests/test_independence.py", "tests/test_oracles_stats.py",
                        "tests/test_ablation.py::test_rank_p_value_and_bootstrap_interval",
                        *PROTOCOL_TESTS],
    "circuits/stats.py": ["tests/test_independence.py", "tests/test_oracles_stats.py",
                          "tests/test_ablation.py::test_rank_p_value_and_bootstrap_interval",
                          "tests/test_patching.py::test_attribution_tracks_exact_patching_on_the_tiny_model"],
    "interp/tasks/base.py": ["tests/test_independence.py", *PROTOCOL_TESTS],
    "interp/protocol.py": [*PROTOCOL_TESTS],
    "interp/training/recipe.py": [*PROTOCOL_TESTS],
    "interp/train.py": [*PROTOCOL_TESTS],
    "interp/training/task.py": [*PROTOCOL_TESTS],
    # issue #23's rules: the rows and tests of tests/test_bad_inputs.py that pin them
    "interp/cli/common.py": [
        f"{BAD}[evaluate-seed-negative]", f"{BAD}[train-seed-2-70]",
        f"{BAD}[evaluate-json-over-a-users-file]", f"{BAD}[evaluate-json-into-the-checkpoint]",
        f"{BAD}[patch-out-inside-the-checkpoint]",
        "tests/test_bad_inputs.py::test_sigterm_is_handled_like_sigint_and_leaves_nothing_behind",
        "tests/test_bad_inputs.py::test_an_allocation_torch_refuses_is_one_line_in_every_command",
        "tests/test_distributed.py::test_a_process_other_than_the_main_one_checks_but_writes_nothing"],
    "interp/io.py": [
        "tests/test_bad_inputs.py::test_a_saved_checkpoint_and_cache_shards_follow_the_umask",
        "tests/test_bad_inputs.py::test_a_run_killed_at_any_point_of_a_save_leaves_only_what_the_next_run_removes",
        "tests/test_bad_inputs.py::test_two_runs_killed_in_a_row_never_lose_the_finished_output",
        "tests/test_bad_inputs.py::test_an_old_copy_is_restored_whenever_its_name_is_missing",
        "tests/test_bad_inputs.py::test_json_may_replace_its_own_earlier_output_and_force_overwrites_a_foreign_file"],
    "interp/models/checkpoint.py": [f"{BAD}[classify-nan-weights]", f"{BAD}[evaluate-nan-weights]",
                                    f"{BAD}[evaluate-interp-json-without-model]"],
    "interp/models/__init__.py": [f"{BAD}[evaluate-context-shorter-than-the-embedding]",
                                  f"{BAD}[evaluate-config-more-layers-than-the-weights]",
                                  f"{BAD}[evaluate-config-zero-heads]"],
    "interp/tasks/quadratic.py": ["tests/test_oracles_tasks.py", "tests/test_quadratic.py"],
    "interp/tasks/arithmetic.py": ["tests/test_oracles_tasks.py",
                                   "tests/test_arithmetic_and_tokenizer.py"],
    "interp/metrics.py": ["tests/test_oracles_tasks.py",
                           "tests/test_evaluate_and_cli.py::test_char_accuracy_is_positionwise_over_the_label_length",
                           "tests/test_evaluate_and_cli.py::test_score_outputs_counts_by_hand"],
    "interp/attention/scores.py": ["tests/test_oracles_attention.py", "tests/test_scores.py",
                                   "tests/test_stats.py", "tests/test_maps.py"],
    # classify() is pure: the synthetic-head tests exercise it; HeadStats is compared with the
    # plain definitions by test_stats' streaming test
    "interp/attention/taxonomy.py": ["tests/test_oracles_attention.py", "tests/test_taxonomy.py",
                                     "tests/test_taxonomy_readable.py"],
    "interp/attention/stats.py": [
        "tests/test_oracles_attention.py", "tests/test_taxonomy.py",
        "tests/test_stats.py::test_streamed_stats_equal_the_plain_definitions",
        "tests/test_taxonomy_readable.py"],
    "interp/attention/routes.py": [
        "tests/test_oracles_attention.py", "tests/test_taxonomy_routes.py::test_route_tables_equal_loops",
        "tests/test_taxonomy_routes.py", "tests/test_taxonomy.py",
        "tests/test_taxonomy_readable.py"],
    "interp/attention/groups.py": [
        "tests/test_oracles_attention.py", "tests/test_taxonomy_routes.py", "tests/test_taxonomy.py",
        "tests/test_stats.py::test_streamed_stats_equal_the_plain_definitions",
        "tests/test_taxonomy_readable.py"],
    "interp/attention/induction.py": ["tests/test_oracles_induction.py", "tests/test_induction.py"],
    "circuits/induction/weights.py": ["tests/test_oracles_induction.py", "tests/test_induction.py"],
    "circuits/induction/checks.py": ["tests/test_oracles_induction.py", "tests/test_induction.py"],
    "circuits/ablation/positions.py": ABLATION_TESTS,
    "circuits/ablation/experiment.py": ABLATION_TESTS,
    "circuits/ablation/interventions.py": ABLATION_TESTS,
    "circuits/patching/pairs.py": PATCHING_TESTS + ["tests/test_patching_slices.py"],
    "circuits/patching/sites.py": PATCHING_TESTS,
    "circuits/patching/fast.py": PATCHING_TESTS,
    "circuits/patching/experiments.py": PATCHING_TESTS,
    # route knockout: the whole file takes about 20 s (its command-line test runs in-process)
    "interp/attention/maps.py": ["tests/test_flow.py", "tests/test_maps.py"],
    # probes: the command-line tests (tests/test_probes_cli.py, subprocesses) are left out;
    # tests/test_probe_targets.py checks the tasks' targets and imports nothing of probes/
    "probes/estimators.py": ["tests/test_probes.py"],
    "probes/fitting.py": ["tests/test_probes.py", "tests/test_probe_scores.py",
                          "tests/test_distributed.py"],
    "probes/controls.py": ["tests/test_probes.py", "tests/test_probe_scores.py"],
    "probes/positions.py": ["tests/test_probes.py", "tests/test_probes_causal.py",
                            "tests/test_probe_scores.py"],
    "probes/causal.py": ["tests/test_probes_causal.py", "tests/test_probes_erasure.py"],
    "probes/erasure.py": ["tests/test_probes_erasure.py"],
    # probe scores (issue #22): the command runs in process in tests/test_probe_scores.py
    "probes/activations.py": ["tests/test_probe_scores.py"],
    "probes/scores.py": ["tests/test_probe_scores.py"],
    # equal-mass route controls and the reads-K path patch (issue #22)
    "circuits/ablation/masscut.py": [
        "tests/test_routes_mass.py::test_equal_mass_controls_match_the_target_mass_recomputed_by_hand",
        "tests/test_routes_mass.py::test_without_the_fallback_a_heavy_target_cannot_be_matched",
        "tests/test_routes_mass.py"],
    "circuits/ablation/reads.py": [
        "tests/test_routes_mass.py::test_value_path_patch_touches_only_the_selected_query_rows",
        "tests/test_routes_mass.py"],
    # patching beyond one slice (#22): the slice tests (pairs.py's entry above includes them)
    "circuits/patching/slices.py": ["tests/test_patching_slices.py"],
    "circuits/patching/slice_result.py": [
        "tests/test_patching_slices.py::test_pooled_and_group_statistics_against_numpy",
        "tests/test_patching_slices.py"],
    # circuit discovery (#24)
    "circuits/discovery/model.py": ["tests/test_discovery.py"],
    "circuits/discovery/graph.py": ["tests/test_discovery.py"],
    "circuits/discovery/scores.py": ["tests/test_discovery.py", "tests/test_discovery_known.py",
                                     "tests/test_distributed.py"],
    "circuits/discovery/faithfulness.py": ["tests/test_discovery.py"],
    "circuits/discovery/compare.py": ["tests/test_discovery.py"],
    "circuits/discovery/induction.py": ["tests/test_discovery_known.py"],
    # tracr known circuits (#24): the programs on every input, the graph, pairs, AUROC (the
    # tests that read docs/ and scripts/, which the copy lacks, are left out)
    "circuits/discovery/known.py": TRACR_TESTS,
    "interp/models/native.py": TRACR_TESTS + ["tests/test_native.py"],
    # the circuit report (#24): planted frames; the browser check is left to the suite
    "interp/viz/circuit_figures.py": [
        "tests/test_discover_report.py",
        "--deselect=tests/test_discover_report.py::test_page_in_the_browser_draws_both_figures_without_errors"],
    "interp/viz/reports/discover.py": [
        "tests/test_discover_report.py",
        "--deselect=tests/test_discover_report.py::test_page_in_the_browser_draws_both_figures_without_errors"],
    "interp/viz/page.py": [
        "tests/test_discover_report.py::test_page_details_fold_escaped_parts_and_keep_their_plotly",
        "tests/test_discover_report.py::test_page_leads_with_findings_then_contents_and_escapes_every_label",
        "tests/test_page.py", "tests/test_page_options.py", "tests/test_classify_page.py",
        "tests/test_browser_charts.py"],      # (BC) chart.js charts one per task, in Chromium
    # the patch and induction reports: planted results and frames (the browser and
    # command-line checks are left to the suite)
    "interp/viz/reports/patch.py": [
        "tests/test_readable_patch_induction.py",
        "--deselect=tests/test_readable_patch_induction.py::test_patch_command_tables_fit_80_columns_and_wide_shows_all",
        "--deselect=tests/test_readable_patch_induction.py::test_induction_command_table_fits_80_columns"],
    "interp/viz/reports/induction.py": [
        "tests/test_readable_patch_induction.py",
        "tests/test_page.py::test_byte_level_tokens_show_their_text_or_their_bytes",
        "tests/test_page.py::test_the_induction_report_names_tokens_by_their_text",
        "--deselect=tests/test_readable_patch_induction.py::test_patch_command_tables_fit_80_columns_and_wide_shows_all",
        "--deselect=tests/test_readable_patch_induction.py::test_induction_command_table_fits_80_columns"],
    # readable ablate, route and probe results (#25, the AP mutants): planted frames first,
    # then the commands in process
    "interp/viz/reports/probe_maps.py": ["tests/test_readable_ablate_probes.py"],
    "interp/viz/reports/probe.py": ["tests/test_readable_ablate_probes.py",
                                    "tests/test_probe_scores.py"],
    "interp/viz/reports/routes.py": [
        "tests/test_readable_ablate_probes.py",
        "tests/test_routes_mass.py::test_small_effects_print_with_significant_digits"],
    "interp/viz/reports/ablate.py": ["tests/test_readable_ablate_probes.py"],
    # the classify page (#25): planted tables and figures; the browser checks are left to the suite
    "interp/viz/figures.py": ["tests/test_classify_page.py", "tests/test_maps.py",
                              "tests/test_page.py"],
    "interp/viz/reports/classify.py": ["tests/test_classify_page.py"],
    # readable head tables (TX): what the numbers mean, stability, the terminal table
    "interp/viz/termtable.py": ["tests/test_termtable.py",
                                "tests/test_routes_mass.py::test_small_effects_print_with_significant_digits"],
    "interp/attention/readout.py": ["tests/test_taxonomy_readable.py"],
    "interp/attention/table_text.py": [
        "tests/test_taxonomy_readable.py::test_verify_table_fits_and_prints_small_effects_and_unchecked_heads",
        "tests/test_taxonomy_readable.py::test_csv_and_json_keep_every_column_in_full",
        "tests/test_taxonomy_readable.py"],
    # exact patching on native decoders (NF): the fast path against a plain TransformerLens
    # forward per patch, and the command on induction pairs
    "circuits/patching/fast_native.py": ["tests/test_native_patching.py"],
    "circuits/patch.py": ["tests/test_native_patching.py"],
    # AtP* (#26, AS): the toy-model oracles and the agreement table
    "circuits/patching/atp.py": ["tests/test_atp.py"],
    "circuits/patching/compare.py": [
        "tests/test_atp.py::test_agreement_against_scipy_and_a_hand_count",
        "tests/test_atp.py::test_the_site_title_names_the_method_its_recall_and_largest_underestimate"],
    # sweeps over processes (SH): the torchrun test runs the three sweeps, 2 processes vs 1;
    # (and the entries of the modules the sweeps live in, with their earlier tests)
    "circuits/ablation/route_shards.py": ["tests/test_distributed_sweeps.py"],
    "interp/distributed.py": ["tests/test_distributed.py", "tests/test_distributed_sweeps.py"],
    "probes/__main__.py": ["tests/test_readable_ablate_probes.py", "tests/test_probe_scores.py",
                           "tests/test_distributed_sweeps.py"],
    "interp/classify_heads.py": [
        "tests/test_routes_mass.py::test_verify_draws_held_out_distinct_equations",
        "tests/test_routes_mass.py::test_classify_heads_prints_untestable_at_ten_controls",
        "tests/test_taxonomy_readable.py::test_verify_table_fits_and_prints_small_effects_and_unchecked_heads",
        "tests/test_taxonomy_readable.py::test_csv_and_json_keep_every_column_in_full",
        "tests/test_distributed_sweeps.py"],
    "circuits/ablation/routes.py": ["tests/test_routes.py", "tests/test_routes_mass.py",
                                    "tests/test_taxonomy_readable.py::test_verify_reads_the_quoted_labels",
                                    "tests/test_taxonomy_readable.py::test_verify_heads_reports_progress_unless_quiet",
                                    "tests/test_distributed_sweeps.py"],
    # models split across devices (DM): the map's checks and the dispatch, on the CPU
    "interp/models/devmap.py": [
        "tests/test_device_map.py",      # scripts/ is not in the copy: its check left out
        "--deselect=tests/test_device_map.py::test_gpu_check_script_parses_and_its_benchmarks_take_its_flags"],
    # the launcher (LN): --nproc, a failure in a worker as one line (tests/test_launch.py)
    "interp/launch.py": ["tests/test_launch.py"],
    # the T5 fast path of patching (TF): against the batched path and plain HF forwards
    "circuits/patching/fast_t5.py": ["tests/test_fast_t5.py"],
}
# AtP* (AS13): the method switch of attribute()
TESTS["circuits/patching/experiments.py"] = TESTS["circuits/patching/experiments.py"] + [
    "tests/test_atp.py::test_graddrop_recovers_the_direct_effect_of_a_planted_cancellation"]
# (LN) the launcher's parts in these modules are tested in tests/test_launch.py
TESTS["interp/cli/common.py"] = TESTS["interp/cli/common.py"] + [
    "tests/test_launch.py::test_a_worker_hands_its_error_to_the_launcher_and_prints_nothing",
    "tests/test_launch.py::test_a_worker_that_failed_leaves_without_the_interpreters_exit",
    "tests/test_launch.py::test_a_sweep_smaller_than_the_processes_is_one_line_not_one_per_worker"]
TESTS["interp/distributed.py"] = TESTS["interp/distributed.py"] + [
    "tests/test_launch.py::test_the_process_group_gets_the_collectives_timeout"]

M = Mutant
MUTANTS = [
    # ---------------------------------------------------------------- interp/hooks.py
    M("K01", "interp/hooks.py", "eval_mode: the training flag is not restored",
      "            model.train(was_training)\n", "            model.eval()\n"),
    M("K02", "interp/hooks.py", "capture: the pass never stops early",
      "            if stop and len(store) == len(wanted):", "            if False:"),
    M("K03", "interp/hooks.py", "run: pre-hooks stay attached after the call",
      "            for h in handles:\n                h.remove()", "            pass"),
    M("K04", "interp/hooks.py", "hook_name: cross attention read from the self-attention module",
      '{"cross": "cross_attn", "decoder_self": "self_attn"}', '{"cross": "self_attn", "decoder_self": "self_attn"}'),
    M("K05", "interp/hooks.py", "run: gradients kept by default",
      "torch.set_grad_enabled(grad)", "torch.set_grad_enabled(True)"),
    # ---------------------------------------------------------------- circuits/stats.py
    M("S01", "interp/stats.py", "bootstrap: lower quantile at 1 - level",
      "np.quantile(means, [(1 - level) / 2,", "np.quantile(means, [(1 - level),"),
    M("S02", "interp/stats.py", "bootstrap: upper quantile too far out",
      "1 - (1 - level) / 2])", "1 - (1 - level) / 4])"),
    M("S03", "interp/stats.py", "bootstrap: resamples one value short (off by one)",
      "size=(n_boot, len(x))", "size=(n_boot, len(x) - 1)"),
    M("S04", "interp/stats.py", "bootstrap: NaNs not dropped",
      "    keep = ~np.isnan(x)\n    x = x[keep]", "    keep = np.ones(len(x), bool)"),
    M("S05", "interp/stats.py", "bootstrap: single-value shortcut from 1 instead of 2",
      "if len(x) < 2:\n        return float(x[0])", "if len(x) < 1:\n        return float(x[0])",
      equivalent="with one value every resample is that value, so the bootstrap also "
                 "returns (x, x)"),
    M("S06", "interp/stats.py", "bootstrap: resamples without replacement (a permutation)",
      "means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)",
      "means = np.stack([rng.permutation(x) for _ in range(n_boot)]).mean(1)"),
    M("S07", "circuits/stats.py", "rank p: strict > (ties with the target not counted)",
      "np.sum(c >= target)", "np.sum(c > target)"),
    M("S08", "circuits/stats.py", "rank p: counts controls below the target",
      "np.sum(c >= target)", "np.sum(c <= target)"),
    M("S09", "circuits/stats.py", "rank p: no +1 in the numerator",
      "(1 + np.sum(c >= target))", "(np.sum(c >= target))"),
    M("S10", "circuits/stats.py", "rank p: no +1 in the denominator",
      "/ (1 + len(c)))", "/ (len(c)))"),
    M("S11", "circuits/stats.py", "rank p: NaN controls kept",
      "    c = c[~np.isnan(c)]\n    if np.isnan(target)", "    if np.isnan(target)"),
    M("S12", "circuits/stats.py", "spearman: Pearson on raw values",
      "rx = pd.Series(x[keep]).rank().to_numpy()\n    ry = pd.Series(y[keep]).rank().to_numpy()",
      "rx = x[keep]\n    ry = y[keep]"),
    M("S13", "circuits/stats.py", "spearman: ties broken by order, not averaged",
      "rx = pd.Series(x[keep]).rank()", "rx = pd.Series(x[keep]).rank(method='first')"),
    M("S14", "circuits/stats.py", "spearman: NaN pairs dropped by x only",
      "keep = ~(np.isnan(x) | np.isnan(y))", "keep = ~np.isnan(x)"),
    M("S15", "circuits/stats.py", "spearman: the sign of the correlation flipped",
      "return float(np.corrcoef(rx, ry)[0, 1])", "return float(np.corrcoef(rx, -ry)[0, 1])"),
    # ---------------------------------------------------------------- quadratic check
    M("Q01", "interp/tasks/quadratic.py", "check: the two final answers in either order",
      'verdict("final", finals == [x1, x2],', 'verdict("final", finals in ([x1, x2], [x2, x1]),'),
    M("Q02", "interp/tasks/quadratic.py", "check: a in the D expression not checked",
      "(pb, pa, pc) == (b, a, c)", "(pb, pc) == (b, c)"),
    M("Q03", "interp/tasks/quadratic.py", "check: D value up to sign",
      'verdict("D_value", pd == d,', 'verdict("D_value", abs(pd) == abs(d),'),
    M("Q04", "interp/tasks/quadratic.py", "check: the +/- of a root expression not checked",
      "(nb, pop, pa) == (-b, op, a)", "(nb, pa) == (-b, a)"),
    M("Q05", "interp/tasks/quadratic.py", "check: a root value may be either root",
      "pv == (x1 if i == 1 else x2),", "pv in (x1, x2),"),
    M("Q06", "interp/tasks/quadratic.py", "check: one right sqrt is enough",
      "all(v == s for v in svals)", "any(v == s for v in svals)"),
    M("Q07", "interp/tasks/quadratic.py", "check: sqrt passes with one root statement",
      'verdict("sqrt", len(svals) == 2 and all', 'verdict("sqrt", all'),
    M("Q08", "interp/tasks/quadratic.py", "check: trailing text after the last ';' accepted",
      'verdict("format", trailing == "" and len(stmts)', 'verdict("format", len(stmts)'),
    M("Q09", "interp/tasks/quadratic.py", "check: extra statements accepted",
      "len(stmts) == n_expected,", "len(stmts) >= n_expected,"),
    M("Q10", "interp/tasks/quadratic.py", "check: names the last wrong step, not the first",
      "return CheckResult(steps, errors[0] if errors else None)",
      "return CheckResult(steps, errors[-1] if errors else None)"),
    M("Q11", "interp/tasks/quadratic.py", "check: final answer regex accepts trailing text",
      '_FINAL_RE = re.compile(rf"^x={_NUM}$")', '_FINAL_RE = re.compile(rf"^x={_NUM}")'),
    M("Q12", "interp/tasks/quadratic.py", "roots: not sorted",
      "x1, x2 = sorted((n1 // (2 * a), n2 // (2 * a)))", "x1, x2 = (n1 // (2 * a), n2 // (2 * a))",
      equivalent="a > 0 whenever roots exist (checked just above) and s >= 0, so "
                 "n1 = -b - s <= n2 = -b + s and n1 / 2a <= n2 / 2a already"),
    M("Q13", "interp/tasks/quadratic.py", "check: the nan step looks at the last statement",
      'stmts[1] == "x=nan"', 'stmts[-1] == "x=nan"'),
    M("Q14", "interp/tasks/quadratic.py", "discriminant: + 4ac",
      "return b * b - 4 * a * c", "return b * b + 4 * a * c"),
    # ---------------------------------------------------------------- arithmetic check
    M("A01", "interp/tasks/arithmetic.py", "check: format always right",
      "ok_format = bool(_OUT_RE.match(out))", "ok_format = True"),
    M("A02", "interp/tasks/arithmetic.py", "check: result compared as numbers (leading zeros)",
      'steps["result"] = out == want', 'steps["result"] = out.lstrip("0") == want.lstrip("0")'),
    M("A03", "interp/tasks/arithmetic.py", "solve: b - a",
      "return str(a + b if op == \"+\" else a - b)", "return str(a + b if op == \"+\" else b - a)"),
    M("A04", "interp/tasks/arithmetic.py", "check: output regex allows leading zeros",
      '_OUT_RE = re.compile(r"^(0|-?[1-9][0-9]*)$")', '_OUT_RE = re.compile(r"^(-?[0-9]+)$")'),
    M("A05", "interp/tasks/arithmetic.py", "check: a wrong result gives no error message",
      "elif out != want:", "elif False:"),
    M("A06", "interp/tasks/arithmetic.py", "check: result right if the digits match in any order",
      'steps["result"] = out == want', 'steps["result"] = sorted(out) == sorted(want)'),
    M("A07", "interp/tasks/arithmetic.py", "check: output regex without the end anchor",
      '_OUT_RE = re.compile(r"^(0|-?[1-9][0-9]*)$")', '_OUT_RE = re.compile(r"^(0|-?[1-9][0-9]*)")'),
    # ---------------------------------------------------------------- evaluate
    M("E01", "interp/metrics.py", "char_accuracy: counts mismatches",
      "pred[i] == ch), len(label)", "pred[i] != ch), len(label)"),
    M("E02", "interp/metrics.py", "char_accuracy: over the prediction's length",
      "pred[i] == ch), len(label)", "pred[i] == ch), len(pred)"),
    M("E03", "interp/metrics.py", "char_accuracy: compares against the previous character",
      "if i < len(pred) and pred[i] == ch)", "if 0 < i <= len(pred) and pred[i - 1] == ch)"),
    M("E04", "interp/metrics.py", "score: label characters counted from the output",
      "t[3] += n_chars", "t[3] += len(out)"),
    M("E05", "interp/metrics.py", "score: a step counted right when wrong",
      "steps[step][1] += v", "steps[step][1] += not v"),
    M("E06", "interp/metrics.py", "score: per-class exact match over all examples",
      '"exact_match": v[1] / v[0], "char_accuracy"', '"exact_match": v[1] / n, "char_accuracy"'),
    M("E07", "interp/metrics.py", "score: steps that do not apply counted as wrong",
      "if v is not None:\n                steps[step][0] += 1",
      "if True:\n                steps[step][0] += 1\n                v = bool(v)"),
    M("E08", "interp/metrics.py", "score: char accuracy as the mean of per-example shares",
      '"char_accuracy": ok_chars / n_chars if n_chars else 0.0,',
      '"char_accuracy": sum(v[2] / v[3] for c, v in tot.items() if c != "all") '
      '/ max(1, len(tot) - 1),'),
    M("E09", "interp/metrics.py", "score: exact match from the checker's format step",
      "exact = out == ex.tgt", "exact = bool(verdict.steps.get('format'))"),
    # ---------------------------------------------------------------- attention scores
    M("P01", "interp/attention/scores.py", "uniform: rows with one key get 1/2",
      "m.sum(-1, keepdim=True).clamp_min(1))[None, :, None]",
      "m.sum(-1, keepdim=True).clamp_min(2))[None, :, None]"),
    M("P02", "interp/attention/scores.py", "offset profile: offset -K wraps around",
      "inside = (offsets > -K) & (offsets < Q)", "inside = (offsets >= -K) & (offsets < Q)"),
    M("P03", "interp/attention/scores.py", "detection: drops key 1, not BOS",
      "        P = P.clone()\n        P[..., 0] = 0", "        P = P.clone()\n        P[..., 1] = 0"),
    M("P04", "interp/attention/scores.py", "detection: no division by all attention",
      "return (num / den).mean(1)", "return num.mean(1)"),
    M("P05", "interp/attention/scores.py", "previous token: k == q + 1",
      "torch.diag(torch.ones(n - 1), -1)", "torch.diag(torch.ones(n - 1), 1)"),
    M("P06", "interp/attention/scores.py", "duplicate token: includes the token itself",
      "return torch.tril(eq, -1)", "return torch.tril(eq, 0)"),
    M("P07", "interp/attention/scores.py", "induction: the token before the copy",
      "out[:, :, 1:] = dup[:, :, :-1]", "out[:, :, :-1] = dup[:, :, 1:]"),
    M("P08", "interp/attention/scores.py", "entropy: sign flipped",
      "h = -(P * p.log()).sum(-1)", "h = (P * p.log()).sum(-1)"),
    M("P09", "interp/attention/scores.py", "mean over queries: every padded query counted",
      "return (x * w).sum((1, 3)) / w.sum((1, 3)).clamp_min(1)",
      "return (x * w).sum((1, 3)) / (w.shape[1] * x.shape[3])"),
    M("P10", "interp/attention/scores.py", "segment share: segment -1 counts as a segment",
      "same = (q_seg[:, :, None] == k_seg[:, None, :]) & (q_seg[:, :, None] >= 0)",
      "same = (q_seg[:, :, None] == k_seg[:, None, :])"),
    M("P11", "interp/attention/scores.py", "offset model: rows not renormalised",
      "return w / w.sum(-1, keepdim=True).clamp_min(1e-12)", "return w"),
    M("P12", "interp/attention/scores.py", "exclude_current: drops the previous token",
      "P = P * (1 - torch.eye(P.shape[-2], P.shape[-1]))",
      "P = P * (1 - torch.diag(torch.ones(P.shape[-1] - 1), -1)[:P.shape[-2]])"),
    M("P13", "interp/attention/scores.py", "role mass: invalid queries averaged in",
      "w = query_valid(mask).float()[None, :, None, :, None]",
      "w = torch.ones_like(query_valid(mask)).float()[None, :, None, :, None]"),
    # ---------------------------------------------------------------- routes (#13)
    M("R01", "interp/attention/routes.py", "uniform baseline divided by all queries",
      "uniform = u_mass / counts.clamp_min(1)[:, None]", "uniform = u_mass / total"),
    M("R02", "interp/attention/routes.py", "offset-only model not normalised per query group",
      "offset_model = num / num.sum(-1, keepdim=True).clamp_min(1e-30)",
      "offset_model = num / num.sum((-1, -2), keepdim=True).clamp_min(1e-30)"),
    M("R03", "interp/attention/routes.py", "route: lift over uniform not required",
      "r.share >= th.route_key and r.lift >= th.route_lift", "r.share >= th.route_key"),
    M("R04", "interp/attention/routes.py", "route: specificity not required",
      "\n                    and r.specific >= th.route_specific):", "):"),
    M("R05", "interp/attention/routes.py", "MI normalised by the larger entropy",
      "torch.minimum(hq, hk)", "torch.maximum(hq, hk)"),
    M("R06", "interp/attention/routes.py", "routed label: > instead of >=",
      "sum(r.share for r in rs) >= th.route_share", "sum(r.share for r in rs) > th.route_share"),
    M("R07", "interp/attention/routes.py", "route: excess over the offset-only model not required",
      "(off is None or r.share - r.offset_model >= th.route_excess)", "True"),
    M("R08", "interp/attention/routes.py", "a query group's own keys count as a route",
      "            if k == q:\n                continue\n", ""),
    M("R09", "interp/attention/routes.py", "visible queries summed over key roles, not the max",
      "seen = torch.stack([(seen * Gk[:, b]).amax(-1)", "seen = torch.stack([(seen * Gk[:, b]).sum(-1)"),
    M("R10", "interp/attention/taxonomy.py", "broad: any entropy above 0.9 of the maximum log(n)",
      'g["entropy"] >= th.broad * g["entropy_uniform"]', 'g["entropy"] >= th.broad * 1.0'),
    M("R11", "interp/attention/taxonomy.py", "routed label not suppressed by a sharp diagonal",
      "if routed and not sharp:", "if routed:"),
    M("G01", "interp/attention/groups.py", "field: the sign is its own group",
      'FIELD_SUFFIXES = ("_digit", "_sign")', 'FIELD_SUFFIXES = ("_digit",)'),
    M("G02", "interp/attention/groups.py", "token class: digits are words",
      '    if core.isdigit():\n        return "digit"\n', ""),
    # ---------------------------------------------------------------- taxonomy thresholds
    M("T01", "interp/attention/taxonomy.py", "sharp: > instead of >=",
      'g["sharp_mass"] >= th.sharp', 'g["sharp_mass"] > th.sharp'),
    M("T02", "interp/attention/taxonomy.py", "block: lift not required",
      "and blift >= th.block_lift\n", "\n"),
    M("T03", "interp/attention/taxonomy.py", "block: excess over the offset model not required",
      "\n                 and excess >= th.block_excess)", ")"),
    M("T04", "interp/attention/taxonomy.py", "sharp: not suppressed by block",
      'g["sharp_mass"] >= th.sharp and not block', 'g["sharp_mass"] >= th.sharp'),
    M("T05", "interp/attention/taxonomy.py", "blurred: excess over uniform not required",
      '\n          and g["band_mass"] - g["band_uniform"] >= th.band_excess):', "):"),
    M("T06", "interp/attention/taxonomy.py", "vertical: lift not required",
      'g["vertical_share"] >= th.vertical and lift >= th.vertical_lift',
      'g["vertical_share"] >= th.vertical'),
    M("T07", "interp/attention/taxonomy.py", "vertical: names the second role",
      "vertical({quote_group(g['vertical_roles'][0])})",
      "vertical({quote_group(g['vertical_roles'][-1])})"),
    M("T08", "interp/attention/taxonomy.py", "heterogeneous always added",
      'return labels or ["heterogeneous"]', 'return labels + ["heterogeneous"]'),
    M("T09", "interp/attention/taxonomy.py", "vertical: > instead of >=",
      'g["vertical_share"] >= th.vertical', 'g["vertical_share"] > th.vertical'),
    M("T10", "interp/attention/taxonomy.py", "blurred also when sharp",
      "    elif (\"band_mass\" in g and not block", "    if (\"band_mass\" in g and not block"),
    M("T11", "interp/attention/taxonomy.py", "block: share threshold ignored",
      'block = (g["block_share"] >= th.block and', 'block = ('),
    M("T12", "interp/attention/taxonomy.py", "blurred: band threshold ignored",
      'and g["band_mass"] >= th.band\n', "\n"),
    M("T13", "interp/attention/taxonomy.py", "block lift against the vertical baseline",
      'blift = g["block_share"] / max(g["block_uniform"], 1e-9)',
      'blift = g["block_share"] / max(g["vertical_uniform"], 1e-9)'),
    # ---------------------------------------------------------------- attention stats
    M("H01", "interp/attention/stats.py", "uniform first-token mass from key 1",
      "self.u_first += float(u_keys[:, 0].sum())", "self.u_first += float(u_keys[:, 1].sum())"),
    M("H02", "interp/attention/stats.py", "uniform entropy counts invalid queries",
      "self.u_entropy += float((nk.log() * qvalid).sum())",
      "self.u_entropy += float(nk.log().sum())",
      equivalent="a query with no valid key has nk clamped to 1, log 1 = 0: the sum is the same"),
    M("H03", "interp/attention/stats.py", "uniform entropy in bits",
      "self.u_entropy += float((nk.log() * qvalid).sum())",
      "self.u_entropy += float((nk.log2() * qvalid).sum())"),
    M("H04", "interp/attention/stats.py", "previous-token mask: every earlier key",
      "previous = torch.ones(Q, K, dtype=torch.bool).tril(-1).triu(-1)",
      "previous = torch.ones(Q, K, dtype=torch.bool).tril(-1)"),
    M("H05", "interp/attention/stats.py", "vertical baseline: mean instead of sum of top roles",
      'f["vertical_uniform"] = urm[top.indices].sum(-1)',
      'f["vertical_uniform"] = urm[top.indices].mean(-1)'),
    M("H06", "interp/attention/stats.py", "sharp baseline at offset 0 always",
      'f["sharp_uniform"] = uprof[idx]', 'f["sharp_uniform"] = uprof[0].expand_as(mass)'),
    M("H07", "interp/attention/stats.py", "offset range of bidirectional heads one too wide",
      "lo = 0 if self.causal else -min(self.k_width - 1, D)",
      "lo = 0 if self.causal else -min(self.k_width, D)"),
    M("H08", "interp/attention/stats.py", "offset range one short",
      "return list(range(lo, min(self.q_width, D + 1)))",
      "return list(range(lo, min(self.q_width - 1, D + 1)))"),
    M("H09", "interp/attention/stats.py", "uniform block share not divided by key count",
      "self.u_block += float((same.float().sum(-1) / nk * qvalid).sum())",
      "self.u_block += float((same.float().sum(-1) * qvalid).sum())"),
    M("H10", "interp/attention/stats.py", "band: centre off by one",
      "best_c = torch.where(better, i + w, best_c)", "best_c = torch.where(better, i + w - 1, best_c)"),
    M("H11", "interp/attention/stats.py", "band: widest band preferred on ties",
      "better = m > best_mass + 1e-9", "better = m >= best_mass - 1e-9"),
    M("H12", "interp/attention/groups.py", "segments: the boundary starts the next segment",
      "                ids.append(sid)\n                if r in BOUNDARIES:\n                    sid += 1",
      "                if r in BOUNDARIES:\n                    sid += 1\n                ids.append(sid)"),
    M("H13", "interp/attention/groups.py", "number segments: a sign does not start a number",
      'if field is None or field != prev_field or r.endswith("_sign"):',
      "if field is None or field != prev_field:"),
    M("H14", "interp/attention/stats.py", "entropy sign",
      "self.entropy -= torch.matmul(", "self.entropy += torch.matmul("),
    M("H15", "interp/attention/groups.py", "role index: role names shifted by one",
      "index = {r: i for i, r in enumerate(names)}\n    rows",
      "index = {r: i + 1 for i, r in enumerate(names)}\n    rows"),
    # ---------------------------------------------------------------- induction scores
    M("I01", "interp/attention/induction.py", "renormalisation drops key 1, not BOS",
      "    P = P.clone()\n    P[..., 0] = 0\n    return P / P.sum",
      "    P = P.clone()\n    P[..., 1] = 0\n    return P / P.sum"),
    M("I02", "interp/attention/induction.py", "induction: the copy itself, not its successor",
      "P[..., q, q - half + 1].mean(-1)", "P[..., q, q - half].mean(-1)"),
    M("I03", "interp/attention/induction.py", "induction: first second-half query skipped",
      "q = torch.arange(half + 1, 2 * half + 1)", "q = torch.arange(half + 2, 2 * half + 1)"),
    M("I04", "interp/attention/induction.py", "prefix matching: includes the last query of the first repeat",
      "mass[..., first_repeat_len + 1:].mean((1, -1))", "mass[..., first_repeat_len:].mean((1, -1))"),
    M("I05", "circuits/induction/weights.py", "copying: share not rescaled to [-1, 1]",
      "return (2 * share - 1).mean(-1)", "return share.mean(-1)"),
    M("I06", "circuits/induction/weights.py", "copying: mean not subtracted",
      "x = torch.relu(logits - logits.mean(-1, keepdim=True))", "x = torch.relu(logits)"),
    M("I07", "circuits/induction/weights.py", "copying: absolute value instead of ReLU",
      "x = torch.relu(logits - logits.mean(-1, keepdim=True))",
      "x = (logits - logits.mean(-1, keepdim=True)).abs()"),
    M("I08", "circuits/induction/weights.py", "eigen positivity: |real part| in the denominator",
      "lam.abs().sum(-1).clamp_min(1e-30)", "lam.real.abs().sum(-1).clamp_min(1e-30)"),
    M("I09", "interp/attention/induction.py", "ICL: off by one position",
      "d = losses[:, late - 1] - losses[:, early - 1]", "d = losses[:, late] - losses[:, early]"),
    M("I10", "interp/attention/induction.py", "ICL: standard error over n, not sqrt(n)",
      "float(d.std() / math.sqrt(len(d)))", "float(d.std() / len(d))"),
    M("I11", "circuits/induction/weights.py", "composition z not divided by the sd",
      '"z": (v - mean) / sd})', '"z": (v - mean)})'),
    M("I12", "circuits/induction/checks.py", "mean ablation writes head 0's mean",
      "means[name][h].to(z.dtype)", "means[name][0].to(z.dtype)"),
    M("I13", "circuits/induction/checks.py", "mean ablation skips position 0",
      "means = {n: cache[n].float().mean((0, 1)) for n in names}",
      "means = {n: cache[n].float()[:, 1:].mean((0, 1)) for n in names}"),
    M("I14", "circuits/induction/weights.py", "random baseline: K composition not transposed",
      '    if mode == "K":\n        right = right.T', '    if mode == "Q":\n        right = right.T',
      equivalent="the transpose of a product of i.i.d. Gaussian matrices has the same "
                 "distribution, so the baseline's mean and sd change by Monte-Carlo noise only"),
    M("I15", "interp/attention/induction.py", "ICL positions: late at n_ctx - 1",
      "late = max(early + 1, min(n_ctx - 2, round(500 * n_ctx / 512)))",
      "late = max(early + 1, min(n_ctx - 1, round(500 * n_ctx / 512)))"),
    # ---------------------------------------------------------------- ablation
    M("B01", "circuits/ablation/positions.py", "targets: region ignored",
      "out[name] = torch.isin(s.ids, want) & region", "out[name] = torch.isin(s.ids, want)"),
    M("B02", "circuits/ablation/positions.py", "targets: scope all behaves as input",
      '(prep.solution_region[name] if scope == "all" else',
      '(prep.solution_region[name] if scope == "input" else'),
    M("B03", "circuits/ablation/positions.py", "controls may hit target positions",
      "pool = torch.nonzero(r[i] & pools[name][i] & ~tmask[i])",
      "pool = torch.nonzero(r[i] & pools[name][i])"),
    M("B04", "circuits/ablation/positions.py", "controls: target count over all regions",
      "k = int((tmask[i] & r[i]).sum())", "k = int(tmask[i].sum())"),
    M("B05", "circuits/ablation/positions.py", "controls: every control set the same",
      "rng = np.random.default_rng([key[0], j, *key[1:]])",
      "rng = np.random.default_rng(key)"),
    M("B06", "circuits/ablation/positions.py", "controls drawn with replacement",
      "size=k, replace=False)", "size=k, replace=True)"),
    M("B07", "circuits/ablation/experiment.py", "damage sign swapped",
      "return ablated - clean if worse_up else clean - ablated",
      "return clean - ablated if worse_up else ablated - clean"),
    M("B08", "circuits/ablation/experiment.py", "p-value of the negated damage",
      'p_value=rank_p_value(row["target_damage"], ctl_means)',
      'p_value=rank_p_value(-row["target_damage"], ctl_means)'),
    M("B09", "circuits/ablation/interventions.py", "knockout: rows not renormalised",
      "return out / torch.where(total > 0, total, torch.ones_like(total))", "return out"),
    M("B10", "circuits/ablation/interventions.py", "mean: divided by the dataset size",
      "means[s] = {k: v / counts[k] for k, v in sums.items()}",
      "means[s] = {k: v / prep.n for k, v in sums.items()}"),
    M("B11", "circuits/ablation/interventions.py", "resample: own value at the donor's position",
      "V[:, i, p] = R[:, d, where[key]] if key in where", "V[:, i, p] = R[:, i, where[key]] if key in where"),
    M("B12", "circuits/ablation/interventions.py", "loss over ignored positions too",
      "loss[index] = (ce * keep).sum(1) / keep.sum(1)", "loss[index] = ce.sum(1) / keep.sum(1)"),
    M("B13", "circuits/ablation/interventions.py", "field right when another field is wrong only",
      "val = (~(fm & wrong).any(1)).float()", "val = (~wrong.any(1)).float()"),
    M("B14", "circuits/ablation/positions.py", "layer range 'a-b' excludes b",
      "(int(hi) if hi else n_layers - 1) + 1))", "(int(hi) if hi else n_layers - 1)))"),
    M("B15", "circuits/ablation/experiment.py", "difference against the overall control mean",
      "diff = dt - np.nanmean(dcs, axis=0)", "diff = dt - np.nanmean(dcs)"),
    M("B16", "circuits/ablation/experiment.py", "control sd without ddof",
      "control_damage_sd=float(np.nanstd(ctl_means, ddof=1))",
      "control_damage_sd=float(np.nanstd(ctl_means))"),
    # ---------------------------------------------------------------- patching
    M("C01", "circuits/patching/pairs.py", "logit diff sign flipped",
      "return last[rows, good] - last[rows, pairs.corrupt_token.repeat(repeats)]",
      "return last[rows, pairs.corrupt_token.repeat(repeats)] - last[rows, good]"),
    M("C02", "circuits/patching/pairs.py", "logprob: probability instead",
      "return torch.log_softmax(last, -1)[rows, good]", "return torch.softmax(last, -1)[rows, good]"),
    M("C03", "circuits/patching/pairs.py", "metric read one position early",
      "last = logits[:, pairs.answer_pos if pos is None else pos].to(\"cpu\", torch.float32)",
      "last = logits[:, pairs.answer_pos - 1 if pos is None else pos].to(\"cpu\", torch.float32)"),
    M("C04", "circuits/patching/pairs.py", "answer tokens interleaved, not tiled",
      "good = pairs.clean_token.repeat(repeats)", "good = pairs.clean_token.repeat_interleave(repeats)"),
    M("C05", "circuits/patching/sites.py", "setter: position p takes the source at p - 1",
      "                view[k, :, cell[1]] = source[:, cell[1]]\n            elif",
      "                view[k, :, cell[1]] = source[:, cell[1] - 1]\n            elif"),
    M("C06", "circuits/patching/sites.py", "setter: a whole head at the last position only",
      "view[k, :, :, cell[1]] = source[:, :, cell[1]]", "view[k, :, -1, cell[1]] = source[:, -1, cell[1]]"),
    M("C07", "circuits/patching/sites.py", "setter: pattern patch of the next head",
      "            else:  # pattern [b, head, q, k]\n                view[k, :, cell[1]] = source[:, cell[1]]",
      "            else:  # pattern [b, head, q, k]\n                view[k, :, cell[1]] = source[:, (cell[1] + 1) % source.shape[1]]"),
    M("C08", "circuits/patching/experiments.py", "directions swapped",
      "return (pairs.corrupt, pairs.clean) if direction == \"denoise\" else \\\n        (pairs.clean, pairs.corrupt)",
      "return (pairs.clean, pairs.corrupt) if direction == \"denoise\" else \\\n        (pairs.corrupt, pairs.clean)"),
    M("C09", "circuits/patching/experiments.py", "a patch that partly differs is skipped",
      ".flatten(1).all(1).cpu()", ".flatten(1).any(1).cpu()"),
    M("C10", "circuits/patching/fast.py", "fast path: attn_out added, not swapped",
      "            r = r_mid.clone()\n            r[:, 0] += sc[name][:, p] - rc[name][:, p]",
      "            r = r_mid.clone()\n            r[:, 0] += sc[name][:, p]"),
    M("C11", "circuits/patching/fast.py", "fast path: attention scaled by 1/d_head",
      "scores = scores / (self.dh ** 0.5)", "scores = scores / self.dh"),
    M("C12", "circuits/patching/fast.py", "fast path: a query sees itself masked",
      "torch.arange(n_k, device=scores.device)[None, :] > qpos",
      "torch.arange(n_k, device=scores.device)[None, :] >= qpos"),
    M("C13", "circuits/patching/experiments.py", "attribution: difference reversed",
      "(src_acts[n] - a) * g", "(a - src_acts[n]) * g"),
    M("C14", "circuits/patching/experiments.py", "clean and corrupted metric swapped in the result",
      "clean_m, corrupt_m = (src_m, recv_m) if direction == \"denoise\" else (recv_m, src_m)",
      "clean_m, corrupt_m = (recv_m, src_m) if direction == \"denoise\" else (src_m, recv_m)"),
    M("C15", "circuits/patching/pairs.py", "corruption may change the input's length",
      "            if len(src) == len(ex.src):\n                return Example(src, tgt",
      "            if True:\n                return Example(src, tgt",
      equivalent="_digit_changes keeps the sign and the number of digits (no leading zero), "
                 "so the rewritten input always has the original length: the check is a guard"),
    M("C16", "circuits/patching/fast.py", "fast path: mlp_out of the last layer skips the final norm",
      "else tail.head(tail.ln_f(r[:, -1]))", "else tail.head(r[:, -1])"),
    # ---------------------------------------------------------------- circuits/ablation/routes.py
    M("N01", "circuits/ablation/routes.py", "parse_route: the query groups before '->' dropped",
      "        queries = None if not q.strip() else _names(q, spec)\n",
      "        queries = None\n"),
    M("N02", "circuits/ablation/routes.py", "_offset: the diagonal at q + d instead of q - d",
      "return torch.arange(wk)[None, :] == q - d", "return torch.arange(wk)[None, :] == q + d"),
    M("N03", "circuits/ablation/routes.py", "_queries: a lone '*' is every query even where '*' "
      "is a group", 'if ko.queries == ("*",) and not any("*" in row for row in qg):',
      'if ko.queries == ("*",):'),
    M("N04", "circuits/ablation/routes.py", "target_cut: a row left without keys not refused",
      "dead = cut.any(-1) & ~(ok & ~cut).any(-1)", "dead = cut.any(-1) & ~ok.any(-1)"),
    M("N05", "circuits/ablation/routes.py", "target_cut: the cut not restricted to allowed "
      "entries (later and padding keys)",
      "cut = qsel[:, :, None] & ksel[:, None, :] & ok", "cut = qsel[:, :, None] & ksel[:, None, :]"),
    M("N06", "circuits/ablation/routes.py", "allowed: a causal query may not read its own position",
      "ok = ok & torch.ones(ok.shape[1:], dtype=torch.bool).tril()",
      "ok = ok & torch.ones(ok.shape[1:], dtype=torch.bool).tril(-1)"),
    M("N07", "circuits/ablation/routes.py", "control_cuts: controls may cut the target's keys",
      "pool = ok[i, q] & ~tk", "pool = ok[i, q]"),
    M("N08", "circuits/ablation/routes.py", "control_cuts: one key too many (off by one) where "
      "a row's target is smaller than the largest",
      "take = (torch.arange(kmax) < size[:, None])", "take = (torch.arange(kmax) <= size[:, None])"),
    M("N09", "circuits/ablation/routes.py", "control_cuts: the draw furthest in mass kept",
      "best = (mass - m_t).abs().argmin(1)", "best = (mass - m_t).abs().argmax(1)"),
    M("N10", "circuits/ablation/routes.py", "control_cuts: beta ignored (every draw uniform, "
      "none leaning to heavy keys)",
      "keys = (betas * a.clamp_min(1e-30).log()[None])",
      "keys = (0 * betas * a.clamp_min(1e-30).log()[None])"),
    M("N11", "circuits/ablation/routes.py", "label_knockout: the last label checked, not the first",
      "label = str(labels if isinstance(labels, str) else labels[0]).strip()",
      "label = str(labels if isinstance(labels, str) else labels[-1]).strip()"),
    M("N12", "circuits/ablation/routes.py", "label_knockout: a vertical role that is no group not "
      "cut as a fine role", '            head["grouping"] = "fine"\n', "            pass\n"),
    M("N13", "circuits/ablation/routes.py", "label_knockout: blurred_diagonal offset truncated, "
      "not rounded", 'offset=round(float(row["band_centre"]))',
      'offset=int(float(row["band_centre"]))'),
    M("N14", "circuits/stats.py", "verdict (verify_heads' `supported` since #22): confirmed "
      "when the interval OR the p-value says so",
      'return "confirmed" if (ci_low > 0 and p <= alpha) else "not confirmed"',
      'return "confirmed" if (ci_low > 0 or p <= alpha) else "not confirmed"'),
    # ---------------------------------------------------------------- interp/attention/maps.py
    M("F01", "interp/attention/maps.py", "rollout: the layers multiplied in reverse order",
      "        out = a @ out\n", "        out = out @ a\n"),
    M("F02", "interp/attention/maps.py", "rollout: rows not renormalised after the mask",
      "        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)\n", ""),
    M("F03", "interp/attention/maps.py", "rollout: identity and attention weights swapped",
      "a = residual * torch.eye(Q)[None] + (1 - residual) * P[layer].mean(1)",
      "a = (1 - residual) * torch.eye(Q)[None] + residual * P[layer].mean(1)"),
    M("F04", "interp/attention/maps.py", "flow capacities: mean over the batch, not the heads "
      "(wrong axis; broadcasts when batch = heads)",
      "P[layer].double().mean(1)", "P[layer].double().mean(0)"),
    M("F05", "interp/attention/maps.py", "max-flow distances: backward residual edges ignored",
      "resf, resb = (C - F) > eps, F > eps", "resf, resb = (C - F) > eps, F < -1.0"),
    M("F06", "interp/attention/maps.py", "max-flow push: each edge offered the whole excess "
      "(earlier edges' share not subtracted)",
      "send = torch.minimum(r, e[bi, layer, vi, None] - (r.cumsum(1) - r))",
      "send = torch.minimum(r, e[bi, layer, vi, None])"),
    M("F07", "interp/attention/maps.py", "flow normalize: divided by the column sums (wrong axis)",
      "out = out / out.sum(-1, keepdim=True).clamp_min(1e-12)",
      "out = out / out.sum(-2, keepdim=True).clamp_min(1e-12)"),
    M("F08", "interp/attention/maps.py", "flow with one layer: the edge read transposed",
      "out[:, rows] = C[:, 0, rows]", "out[:, rows] = C[:, 0, :, rows].transpose(1, 2)"),
    # ---------------------------------------------------------------- probes/estimators.py
    M("L01", "probes/estimators.py", "standardize: sample (n - 1) instead of population std",
      'var = torch.einsum("cn,cnd->cd", w, (X - mean[:, None]) ** 2) / sw',
      'var = torch.einsum("cn,cnd->cd", w, (X - mean[:, None]) ** 2) / (sw - 1).clamp(min=1)'),
    M("L02", "probes/estimators.py", "ridge: intercept from every row, not the training rows",
      "ym = (w[:, None] * y).sum(-1) / sw[:, None]", "ym = y.mean(-1)"),
    M("L03", "probes/estimators.py", "ridge: penalty counted twice (2 alpha)",
      "+ alphas.double()[None, None, :, None])", "+ 2 * alphas.double()[None, None, :, None])"),
    M("L04", "probes/estimators.py", "ridge: eigenbasis rotation undone with V transposed",
      'W = torch.einsum("cdk,cjak->cjad", V, coef)', 'W = torch.einsum("ckd,cjak->cjad", V, coef)'),
    M("L05", "probes/estimators.py", "logistic: the gradient misses the penalty term",
      "g[..., :-1] += al[..., None, None] * theta[..., :-1]",
      "g[..., :-1] += 0 * theta[..., :-1]"),
    M("L06", "probes/estimators.py", "contrasts: the all-ones direction kept, one contrast dropped",
      "return q[:, 1:].to(dtype)", "return q[:, :-1].to(dtype)"),
    M("L07", "probes/estimators.py", "logistic: weights rotated back with V transposed",
      "torch.matmul(V[:, None], Wf[..., :d].transpose(2, 3))",
      "torch.matmul(V.transpose(1, 2)[:, None], Wf[..., :d].transpose(2, 3))"),
    M("L14", "probes/estimators.py", "logistic: a class the training rows lack keeps a logit",
      "M = torch.where(present, 0.0, NO_LOGIT).to(dt)", "M = torch.zeros_like(present, dtype=dt)"),
    M("L15", "probes/estimators.py", "logistic: two classes fitted as a multinomial, not "
      "sklearn's binary model", "torch.where(present.sum(-1) == 2, 2.0, 1.0)",
      "torch.where(present.sum(-1) == 2, 1.0, 1.0)"),
    M("L16", "probes/estimators.py", "logistic: compaction writes finished problems to the "
      "wrong slots", "out.view(-1, J, d1)[slot[done]] = theta[done]",
      "out.view(-1, J, d1)[slot[done].flip(0)] = theta[done]"),
    M("L17", "probes/estimators.py", "logistic: rows cut by their position, not their weight",
      "return torch.sort((w <= 0).to(torch.int8), dim=1, stable=True).indices[:, :m]",
      "return torch.arange(w.shape[1]).expand(w.shape[0], -1)[:, :m]"),
    M("L18", "probes/estimators.py", "logistic: cells with few rows not fitted as a batch apart",
      "FEW_ROWS = 4 ", "FEW_ROWS = 0 ",
      equivalent="a problem's iterates depend on its own rows, labels and penalty and on the "
      "iteration count only; the split moves slow problems out of the others' batch (speed)"),
    M("L19", "probes/estimators.py", "logistic: each class's feature sum taken from the first "
      "penalty's labels (the per-problem class offset lost)",
      "1, Y[:, :, 0] + K * torch.arange(A)[None, :, None],",
      "1, Y[:, :1, 0] + 0 * torch.arange(A)[None, :, None],"),
    M("L20", "probes/estimators.py", "logistic: the line search's change of the logsumexp not "
      "weighted by the class probabilities", "sp = torch.expm1(D).mul_(p).sum(-2)",
      "sp = torch.expm1(D).sum(-2)"),
    M("L21", "probes/estimators.py", "logistic: the probabilities never recomputed from the "
      "weights (their running update's drift kept)",
      "if (it % EXACT == 0 and it != resumed) or p is None:", "if p is None:"),
    M("L22", "probes/estimators.py", "logistic: the probabilities after a full step not "
      "renormalised (p exp(D), not divided by 1 + s)",
      "return D.exp_().mul_(p).div_(sp.add(1)[..., None, :])", "return D.exp_().mul_(p)"),
    M("L27", "probes/estimators.py", "logistic: the probabilities after a full step as p + p "
      "expm1(D) (a falling class's small probability lost, and its later rise unseen)",
      "return D.exp_().mul_(p).div_(sp.add(1)[..., None, :])",
      "return p.add(p * torch.expm1(D)).div_(sp.add(1)[..., None, :])"),
    M("L28", "probes/estimators.py", "logistic: a relayout drops the L-BFGS curvature pairs",
      'new.update({k: [x[ic, ia] for x in st[k]] for k in ("S", "Yh", "rho")})',
      'new.update({k: [] for k in ("S", "Yh", "rho")})'),
    M("L23", "probes/estimators.py", "logistic: a full step's change trusted however far the "
      "logits move (1 + s near 0)",
      "return sp, torch.log1p(sp), (sp >= -0.5) & torch.isfinite(sp)",
      "return sp, torch.log1p(sp), torch.isfinite(sp)"),
    M("L24", "probes/estimators.py", "logistic: the true classes' logit change counted with "
      "the wrong sign in a step's decrease",
      "dy = (torch.matmul(Q, direction) * Yz).sum((2, 3))",
      "dy = -(torch.matmul(Q, direction) * Yz).sum((2, 3))"),
    M("L25", "probes/estimators.py", "logistic: the first of two groups one slot too narrow "
      "(its cells' last live problem dropped)",
      "return [(torch.sort(cells[:cut]).values, int(counts[cut - 1])),",
      "return [(torch.sort(cells[:cut]).values, int(counts[cut - 1]) - 1),"),
    M("L26", "probes/estimators.py", "logistic: exact probabilities on the rows a cell does "
      "not train on", "    return P.mul_(w.to(P.dtype)[:, None, None, :])", "    return P"),
    # ---------------------------------------------------------------- probes/fitting.py
    M("L08", "probes/fitting.py", "regression: the penalty with the worst validation R^2 chosen",
      "nan=-math.inf).argmax(1)", "nan=math.inf).argmin(1)"),
    M("L09", "probes/fitting.py", "classification: the penalty with the worst validation "
      "accuracy chosen", "best = crit.argmax(1)", "best = crit.argmin(1)"),
    M("L10", "probes/fitting.py", "classification baseline: the rarest training class",
      "major = counts.argmax(1)", "major = counts.argmin(1)"),
    M("L11", "probes/fitting.py", "regression baseline: the mean of the test rows, not train",
      "mu = (train * yj).sum(1) / train.sum(1).clamp(min=1)",
      "mu = (test * yj).sum(1) / test.sum(1).clamp(min=1)"),
    M("L12", "probes/fitting.py", "_r2: the mean over every row, not the weighted rows",
      "mean = (w * y).sum(-1) / n.clamp(min=1)", "mean = y.mean(-1)"),
    M("L13", "probes/fitting.py", "regression: raw-space intercept forgets the std",
      "(bb - (Wb * mean / std).sum(1))", "(bb - (Wb * mean).sum(1))"),
    # ---------------------------------------------------------------- probes/controls.py
    M("U01", "probes/controls.py", "control_labels: types not shuffled (one map for every seed)",
      "order = rng.permutation(len(counts))", "order = np.arange(len(counts))"),
    M("U02", "probes/controls.py", "control_labels: the seed ignored (one map for every seed)",
      "rng = np.random.default_rng(seed)", "rng = np.random.default_rng(0)"),
    M("U03", "probes/controls.py", "control_labels: examples without a label get a control label",
      "rows = (t >= 0) & ~np.isnan(labels)[:, None]", "rows = t >= 0"),
    M("U04", "probes/controls.py", "control_labels: labels drawn independently per type, "
      "not stratified",
      "table[order] = pool[np.minimum((mids * len(pool)).astype(int), len(pool) - 1)]",
      "table[order] = pool[rng.integers(len(pool), size=len(counts))]"),
    M("U05", "probes/controls.py", "split_groups: validation boundary off by one",
      "1 if j < counts[0] + counts[1] else 2", "1 if j <= counts[0] + counts[1] else 2"),
    M("U06", "probes/controls.py", "split_groups: a part of exactly `minimum` groups refused",
      "if min(counts) < minimum:", "if min(counts) <= minimum:"),
    # ---------------------------------------------------------------- probes/positions.py
    M("U07", "probes/positions.py", "control_types: the role keeps its occurrence (a's first and "
      "second digit are different types)",
      'roles = [_base(k) if keys is not None else "" for k in (keys or [""] * P)]',
      'roles = [k if keys is not None else "" for k in (keys or [""] * P)]'),
    M("U08", "probes/positions.py", "control_types: the type is the token before the position",
      "pairs = [(roles[p], tokens[i][ti[i, p]]) for i, p in cells]",
      "pairs = [(roles[p], tokens[i][max(0, ti[i, p] - 1)]) for i, p in cells]"),
    M("U09", "probes/positions.py", "side_keys: the equation's last character keyed as solution",
      'elif side_name == "src" or p <= ns:', 'elif side_name == "src" or p < ns:'),
    M("U10", "probes/positions.py", "select: a bare role also selects solution positions",
      'or (not k.startswith("out:") and item == _base(k).split(":", 1)[-1])',
      'or (item == _base(k).split(":", 1)[-1])'),
    # ---------------------------------------------------------------- probes/causal.py
    M("V01", "probes/causal.py", "orthonormal: basis rows not normalised",
      "basis.append(row / n)", "basis.append(row)"),
    M("V02", "probes/causal.py", "project_out: the centre added instead of subtracted",
      "c = xf if center is None else xf - center.to(xf)",
      "c = xf if center is None else xf + center.to(xf)"),
    M("V03", "probes/causal.py", "random_basis: QR signs not fixed (not uniform on the sphere)",
      "(q * np.sign(np.diag(r))).T.copy()", "q.T.copy()"),
    M("V04", "probes/causal.py", "_hook: a key at token index 0 skipped",
      "rows = torch.nonzero((pos >= 0) & (pos < x.shape[1]))",
      "rows = torch.nonzero((pos > 0) & (pos < x.shape[1]))"),
    M("V05", "probes/causal.py", "steer: the direction subtracted",
      "x[rows, cols].float() + alpha * V[0]", "x[rows, cols].float() - alpha * V[0]"),
    M("V06", "probes/causal.py", "remove_direction: every control the same random direction",
      "rng = np.random.default_rng([seed, j])", "rng = np.random.default_rng(seed)"),
    M("V07", "probes/causal.py", "_damage: a field's loss (loss:<name>) counted as an accuracy",
      'worse_up = metric in HIGHER_IS_WORSE or metric.startswith("loss:")',
      "worse_up = metric in HIGHER_IS_WORSE"),
    M("V08", "probes/causal.py", "steering_vector: from target to source (reversed)",
      "diff = X[t].mean(0) - X[s].mean(0)", "diff = X[s].mean(0) - X[t].mean(0)"),
    # ---------------------------------------------------------------- #22: independence
    M("FD01", "interp/stats.py", "bootstrap: groups ignored (rows resampled as independent)",
      "    if groups is None:\n        means = x[", "    if True:\n        means = x["),
    M("FD02", "interp/stats.py", "cluster bootstrap: the mean of group means (unweighted)",
      "means = sums[pick].sum(1) / counts[pick].sum(1)", "means = (sums / counts)[pick].mean(1)"),
    M("FD03", "interp/tasks/base.py", "generate: unique=True draws with replacement",
      "                if unique:\n", "                if False:\n"),
    M("FD04", "circuits/stats.py", "verdict: the p floor not applied (silent not confirmed)",
      '    if not testable(n_controls, alpha):\n        return "untestable"\n', ""),
    M("FD05", "interp/tasks/base.py", "generate: a spent class reported one input too many",
      "_exhausted(self, cls, made, k, n, mix, heldout)",
      "_exhausted(self, cls, made + 1, k, n, mix, heldout)"),
    M("FD06", "circuits/stats.py", "p_floor: 1/n instead of 1/(n+1)",
      "return 1.0 / (1 + n_controls)", "return 1.0 / max(n_controls, 1)"),
    # ---------------------------------------------------------------- #23: bad input rules
    M("BI01", "interp/cli/common.py", "seed: -1 accepted",
      "if not 0 <= v <= SEED_MAX:", "if not -1 <= v <= SEED_MAX:"),
    M("BI02", "interp/cli/common.py", "--json: a foreign file overwritten",
      "not earlier_output(path, owner):", "False:"),
    M("BI03", "interp/cli/common.py", "outputs inside the loaded checkpoint allowed",
      "if ckpt is not None and (", "if False and ("),
    M("BI04", "interp/models/checkpoint.py", "NaN/Inf weights not detected",
      "not bool(t.isfinite().all())", "False"),
    M("BI05", "interp/cli/common.py", "SIGTERM not handled like SIGINT",
      "old_term = _catch_sigterm()", "old_term = None"),
    M("BI06", "interp/io.py", "the sentinel removed before the rename (an orphan on SIGKILL)",
      "        os.rename(tmp, target)\n        # the sentinel",
      "        (tmp / PARTIAL).unlink(missing_ok=True)\n        os.rename(tmp, target)\n"
      "        # the sentinel"),
    M("BI07", "interp/io.py", "umask modes not applied (safetensors' 0600 kept)",
      "    mode = 0o666 & ~current_umask()\n", "    return\n"),
    M("BI08", "interp/models/__init__.py", "config against the weights' shapes not compared",
      "if k in want and want[k] != shape:", "if False:"),
    M("BI11", "interp/models/__init__.py", "layer counts of the config not compared with the file",
      "if said is not None and found and said != max(found) + 1:", "if False:"),
    M("BI12", "interp/io.py", "an old copy deleted while its name is missing (the only copy)",
      'if m["kind"] == "old" and not os.path.lexists(folder / m["name"]):',
      'if m["kind"] == "old" and not (p / PARTIAL).is_file() and '
      'not os.path.lexists(folder / m["name"]):'),
    M("BI09", "interp/cli/common.py", "torch's allocation failure not turned into one line",
      'if type(e).__name__ != "OutOfMemoryError" and "can\'t allocate memory" not in text:',
      "if True:"),
    M("BI10", "interp/models/checkpoint.py", "interp.json without 'model' not named",
      '    if "model" not in meta:\n', '    if False:\n'),
    # ------------------------------------------- probe scores without artifacts (issue #22)
    M("PS01", "probes/positions.py", "control_types: the type is a window again (the whole "
      "prefix up to the position)",
      "pairs = [(roles[p], tokens[i][ti[i, p]]) for i, p in cells]",
      "pairs = [(roles[p], tuple(tokens[i][:ti[i, p] + 1])) for i, p in cells]"),
    M("PS02", "probes/positions.py", "control_types: the token alone, its role ignored",
      'roles = [_base(k) if keys is not None else "" for k in (keys or [""] * P)]',
      'roles = ["" for k in (keys or [""] * P)]'),
    M("PS03", "probes/fitting.py", "the control not floored at its own baseline",
      'cscore = max(ctl["score"][c], ctl["baseline"][c])', 'cscore = ctl["score"][c]'),
    M("PS04", "probes/fitting.py", "a control reported where its labels are constant",
      "if ctl is not None and _varies(ctrl[:, cols[c]], has[c].numpy()):",
      "if ctl is not None:"),
    M("PS05", "probes/fitting.py", "the positional baseline read from the last collected layer",
      "X = torch.stack([E[:, j] for j, _ in chunk])",
      "X = torch.stack([acts.store[list(acts.store)[-1]][:, j] for j, _ in chunk])"),
    M("PS06", "probes/activations.py", "the positional features without the position embedding",
      "E = E + W_pos[safe]", "E = E + 0 * W_pos[safe]"),
    M("PS07", "probes/scores.py", "within-class R^2 pooled across classes (around the overall "
      "mean)",
      "tot_k = float(((yt[m] - yt[m].mean()) ** 2).sum())",
      "tot_k = float(((yt[m] - yt.mean()) ** 2).sum())"),
    M("PS08", "probes/scores.py", "the class-mean oracle fitted on the test rows",
      "means = {k: y[train & (cls == k)].mean() if (train & (cls == k)).any() else mean_all",
      "means = {k: y[test & (cls == k)].mean() if (test & (cls == k)).any() else mean_all"),
    M("PS09", "probes/fitting.py", "the accuracy interval resamples rows, not equations",
      'return bootstrap_ci(task["pred"][c][test], n_boot=n_boot, seed=seed, groups=g)',
      'return bootstrap_ci(task["pred"][c][test], n_boot=n_boot, seed=seed)'),
    M("PS10", "probes/scores.py", "the R^2 interval resamples rows, not equations",
      "pick = np.random.default_rng(seed).integers(0, m, size=(n_boot, m))",
      "code, m = np.arange(len(y)), len(y)\n    sums = [np.bincount(code, weights=w, minlength=m)"
      "\n            for w in (np.ones_like(y), y, y * y, (y - pred) ** 2)]\n"
      "    pick = np.random.default_rng(seed).integers(0, m, size=(n_boot, m))"),
    M("PS11", "probes/__main__.py", "examples drawn without unique (repeated equations)",
      "heldout=True if a.heldout else None,\n                             unique=True)",
      "heldout=True if a.heldout else None,\n                             unique=False)"),
    M("PS12", "probes/scores.py", "coincide: a function one way counts as the same split",
      "return len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})",
      "return len(pairs) == len({x for x, _ in pairs})"),
    M("PS13", "probes/fitting.py", "n_eq_test counts test rows, not distinct equations",
      '"n_eq_test": len(np.unique(groups[test])),', '"n_eq_test": int(test.sum()),'),
    M("PS14", "interp/viz/reports/probe.py", "class_only: the flag inverted",
      "return within_r2 is not None and not pd.isna(within_r2) and within_r2 < ACCURATE",
      "return within_r2 is not None and not pd.isna(within_r2) and within_r2 > ACCURATE"),
    M("PS15", "probes/__main__.py", "a target that coincides with an earlier one is fitted again",
      "        if t in same:\n            continue\n", ""),
    M("PS16", "probes/controls.py", "control labels drawn per key's examples, not over every "
      "occurrence (the pool misses repeated keys)",
      "pool = np.sort(np.broadcast_to(labels[:, None], (n, P))[rows])",
      "pool = np.sort(labels[rows.any(1)])"),
    # ------------------------------------------ equal-mass route controls, reads K (#22)
    M("EM01", "circuits/ablation/masscut.py", "equal mass: the control mass ignored (the "
      "first key of each order kept, whatever its mass)",
      "diff = (cum - m[None, None, :, None]).abs()", "diff = (cum * 0).abs()"),
    M("EM02", "circuits/ablation/masscut.py", "equal mass: the other-heads fallback never taken",
      "        if bool(need.any()):", "        if False:"),
    M("EM03", "circuits/ablation/masscut.py", "equal mass: controls may cut the target's keys",
      "        pool = ok[i, q] & ~tk\n", "        pool = ok[i, q]\n"),
    M("EM04", "circuits/ablation/masscut.py", "equal mass: the fallback may cut the target's "
      "own head", "others = [g for g in range(h_all) if g != head]",
      "others = list(range(h_all))"),
    M("EM05", "circuits/ablation/reads.py", "reads K: a donor of any layout",
      "return tuple(tuple(prep.sides[s].roles[i]) for s in sorted(prep.sides))",
      "return ()"),
    M("EM06", "circuits/ablation/reads.py", "reads K: the values patched for every query that "
      "reads K, not the route's query rows",
      "w = (sel.to(pattern.dtype) * pattern)",
      "w = (sel.any(2, keepdim=True).to(pattern.dtype) * pattern)"),
    M("EM07", "circuits/ablation/routes.py", "verify_heads: the p floor not applied (too few "
      "controls read as not supported)", '            if word == "untestable":',
      "            if False:"),
    M("EM08", "circuits/ablation/routes.py", "ablate_route: the verdict judged as if there "
      "were 20 controls", '"verdict": verdict(lo, p, n_controls)', '"verdict": verdict(lo, p, 20)'),
    M("EM09", "interp/classify_heads.py", "--verify drawn without heldout",
      "heldout=True, unique=True)", "heldout=None, unique=True)"),
    M("EM10", "interp/classify_heads.py", "--verify drawn with repeats",
      "heldout=True, unique=True)", "heldout=True, unique=False)"),
    # ---------------------------------------------------------------- sweeps over processes (DI)
    M("DI01", "interp/distributed.py", "the other processes' patches never gathered",
      "    if not launched():\n        return\n    for key, value in gather(",
      "    return\n    for key, value in gather("),
    M("DI02", "interp/distributed.py", "a command that does not share its work runs launched",
      "    if launched():\n        from interp.errors import InterpError\n\n        raise InterpError(f\"{command} runs",
      "    if False:\n        from interp.errors import InterpError\n\n        raise InterpError(f\"{command} runs"),
    M("DI03", "interp/cli/common.py", "every process writes the outputs",
      "    if not distributed.is_main():       # launched: every process checks, the main one writes",
      "    if False:"),
    M("DI04", "circuits/discovery/scores.py", "exact edge scores: the other processes' edges never gathered",
      "    dist.gather_into(scores, [e for _, part in mine for e in part])",
      "    pass"),
    M("DI05", "circuits/ablation/reads.py", "the donor pool reused across seeds",
      "           json.dumps(task.describe(), sort_keys=True, default=str), pool, seed)",
      "           json.dumps(task.describe(), sort_keys=True, default=str), pool)"),
    M("DI06", "probes/fitting.py", "a probe grid's chunks from the other processes never gathered",
      "    if shared:\n        _gather(res)", "    if False:\n        _gather(res)"),
    # ---------------------------------------------------------------- the seed's protocol (SP)
    M("SP01", "interp/protocol.py", "the test rows that chose the checkpoint are scored too",
      "    rows = test[chosen:]\n", "    rows = test\n"),
    M("SP02", "interp/protocol.py", "overlap measured against the test rows themselves",
      "seen = np.array(overlap(train, rows))", "seen = np.array(overlap(rows, rows))"),
    M("SP03", "interp/protocol.py", "exact matches from seen rows over all rows, not all matches",
      "float(ok[seen].sum() / ok.sum())", "float(ok[seen].sum() / len(ok))"),
    M("SP04", "interp/protocol.py", "unseen rows averaged over classes, not at the class mix",
      "sum(mix[c] * per_class[c][\"exact_unseen\"] for c in mix)",
      "sum(per_class[c][\"exact_unseen\"] / len(mix) for c in mix)"),
    M("SP05", "interp/protocol.py", "the interval resamples rows, not equations",
      "lo, hi = bootstrap_ci(ok.astype(float), groups=src, seed=0)",
      "lo, hi = bootstrap_ci(ok.astype(float), seed=0)"),
    M("SP06", "interp/training/recipe.py", "the seed's split removes repeats",
      "dedup=cfg.split != \"seed\")", "dedup=True)"),
    M("SP07", "interp/tasks/base.py", "the split as generated drops the first test row",
      "return list(examples[:cut]), list(examples[cut:])",
      "return list(examples[:cut]), list(examples[cut + 1:])"),
    M("SP08", "interp/training/task.py", "a pause one step late",
      "(pause_at is not None and self.step >= pause_at)",
      "(pause_at is not None and self.step > pause_at)"),
    M("SP09", "interp/train.py", "--protocol seed leaves the preset at small",
      "        args.preset = \"seed\"\n        return \"fixed\", \"seed\"",
      "        return \"fixed\", \"seed\""),
    # ---------------------------------------------------------------- terminal tables (TT)
    M("TT01", "interp/viz/termtable.py", "the table ignores the width",
      "limit = None if wide else (width if width is not None else width_now())",
      "limit = None"),
    M("TT02", "interp/viz/termtable.py", "numbers left-aligned",
      "out.append(s.rjust(size[c]) if numeric[c] else s.ljust(size[c]))",
      "out.append(s.ljust(size[c]))"),
    M("TT03", "interp/viz/termtable.py", "an interval's bounds printed on the estimate's decimals",
      "d = decimals(est, lo, hi, least=least)", "d = decimals(est, least=least)"),
    M("TT04", "interp/viz/termtable.py", "-0.0 printed with its minus",
      'return f"{v + 0.0:+.{decimals(v, least=least)}f}"', 'return f"{v:+.{decimals(v, least=least)}f}"'),
    M("EM11", "interp/viz/termtable.py", "a small effect printed with three decimals "
      "(reads as zero)", "return min(12, max(least, 1 - math.floor(math.log10(m))))",
      "return least"),
    # ---------------------------------------------------------------- erasure (issue #22)
    M("ER01", "probes/erasure.py", "inlp: a single step (no iteration to baseline)",
      "        if at_baseline(p, margin):\n            return er, steps",
      "        if len(basis) or at_baseline(p, margin):\n            return er, steps"),
    M("ER02", "probes/erasure.py", "leace: no whitening (orthogonal projection off W S_xz)",
      "    Q = W_pinv @ U @ U.T @ W\n", "    Q = U @ U.T\n"),
    M("ER03", "probes/erasure.py", "leace: the subspace from S_xz, not the whitened W S_xz",
      "torch.linalg.svd(W @ C, full_matrices=False)", "torch.linalg.svd(C, full_matrices=False)"),
    M("ER04", "probes/causal.py", "erasure_check: the power check skipped (always reached)",
      "reached = bool(checked.at_baseline.all())", "reached = True"),
    M("ER05", "probes/causal.py", "erasure_check: the next layer left out of the power check",
      'checked = power[power["where"].isin(["erased", "next"])]',
      'checked = power[power["where"].isin(["erased"])]'),
    M("ER06", "probes/causal.py", "_edit_hook: the erasure applied at one position only",
      "        for key, idx in at.items():\n            pos = idx[index].to(x.device)",
      "        for key, idx in list(at.items())[:1]:\n            pos = idx[index].to(x.device)"),
    M("ER07", "probes/erasure.py", "random_like: the control one rank below the target",
      "g = torch.from_numpy(rng.standard_normal((R.shape[1], er.rank)))",
      "g = torch.from_numpy(rng.standard_normal((R.shape[1], max(1, er.rank - 1))))"),
    M("ER08", "probes/erasure.py", "random_like: LEACE's control orthogonal (not whitened)",
      "    if er.whiten is not None:\n        W, W_pinv, R = er.whiten",
      "    if False:\n        W, W_pinv, R = er.whiten"),
    M("ER09", "probes/causal.py", "_conclude: a failed erasure not said to have failed",
      "    if not reached:\n        worst = checked", "    if False:\n        worst = checked"),
    M("ER10", "probes/causal.py", "_donors: a donor of any layout",
      "        pool = [j for j in by[s] if j != i",
      "        pool = [j for j in range(len(sig)) if j != i"),
    M("ER11", "probes/erasure.py", "at_baseline: the margin not applied (any excess passes)",
      'return bool(probe["excess"] == probe["excess"] and probe["excess"] <= margin)',
      'return bool(probe["excess"] == probe["excess"] and probe["excess"] <= 1.0)'),
    M("ER12", "probes/erasure.py", "leace: the concept mean not removed from Z",
      "    Xc, Zc = Xd - mu, Z - Z.mean(0)", "    Xc, Zc = Xd - mu, Z",
      equivalent="the cross-covariance Xc^T Z / n is unchanged: the centred rows sum to 0, "
                 "so Xc^T (Z - mean) = Xc^T Z (kept as a record of the check)"),
    # ---------------------------------------------------------------- patching slices (#22)
    M("PX01", "circuits/patching/slices.py", "pair_groups: only the largest layout group",
      "keep = [g[:max_pairs] for g in ranked if len(g) >= min_pairs]",
      "keep = [g[:max_pairs] for g in ranked[:1] if len(g) >= min_pairs]"),
    M("PX02", "circuits/patching/pairs.py", "answer_index: D's first token whatever is asked",
      "    f = answer_field(answer)\n", "    f = \"D_value\"\n"),
    M("PX03", "circuits/patching/pairs.py", "answer_index: the token choice ignored (first)",
      'if token == "first":', "if True:"),
    M("PX04", "circuits/patching/pairs.py", "answer_index: digit reads the field's first token",
      'k = next((i for i in idx if roles_c[i].endswith("_digit")), None)', "k = idx[0]"),
    M("PX05", "circuits/patching/slices.py", "slice_patch: the joint patch patches one position",
      "sets = [[p] for p in tpos] + [tpos] +", "sets = [[p] for p in tpos] + [tpos[:1]] +"),
    M("PX06", "circuits/patching/slices.py", "slice_patch: controls one position smaller",
      "control_sets(others, len(tpos), n_controls, rng)",
      "control_sets(others, max(1, len(tpos) - 1), n_controls, rng)"),
    M("PX07", "circuits/patching/slices.py", "control_sets: sets drawn one position smaller",
      "return rng.sample(combos, n), n", "return [c[1:] for c in rng.sample(combos, n)], n"),
    M("PX08", "circuits/patching/slices.py", "pair_groups: no-root problems never drawn",
      "classes = tuple(classes or task.classes)",
      'classes = tuple(c for c in (classes or task.classes) if c != "none")'),
    M("PX09", "circuits/patching/slices.py", "patch_sets: the receiving run's own activation",
      "view[j, :, ps] = src_acts[names[l]][:, ps].to(act.dtype)",
      "view[j, :, ps] = recv_acts[names[l]][:, ps].to(act.dtype)"),
    M("PX10", "circuits/patching/slice_result.py", "share: the corrupted metric not subtracted",
      "v = (patched - run.corrupt) / gap", "v = patched / gap"),
    M("PX11", "circuits/patching/slice_result.py", "joint p-value: controls ranked per pair",
      "p = rank_p_value(float(v.mean()), ctrl.mean(1))",
      "p = rank_p_value(float(v.mean()), ctrl.mean(0))"),
    M("PX12", "circuits/patching/slice_result.py", "verdict: the control count not passed",
      "word = verdict(elo, p, k_used)", "word = verdict(elo, p, 19)"),
    M("PX13", "circuits/patching/slice_result.py", "pooled: control k taken from group 0 only",
      "self._share(r, r.cells[l, s + k], gap) for r, s in zip(have, start)])",
      "self._share(r, r.cells[l, start[0] + k], gap) for r in have])"),
    # ---------------------------------------------------------------- token ablation's controls (#22)
    M("TA01", "circuits/ablation/experiment.py", "resample takes donors of any layout by default",
      'progress=None, donors: str = "layout"', 'progress=None, donors: str = "any"'),
    M("TA02", "circuits/ablation/positions.py", "layout donors: one group of every example",
      "for g in layout_groups(prep):", "for g in [list(range(prep.n))]:"),
    M("TA03", "circuits/ablation/positions.py", "layout donors: an example donates to itself",
      "donor[g[order]] = g[np.roll(order, -1)]", "donor[g[order]] = g[order]"),
    M("TA04", "circuits/ablation/positions.py", "layout: every role of the side, not the input's",
      "return tuple(roles[p] for p in torch.nonzero(prep.input_region[side][i]).flatten().tolist())",
      "return tuple(roles)"),
    M("TA05", "circuits/ablation/experiment.py", "examples without a same-layout donor kept",
      "alone = {g[0] for g in layout_groups(prep) if len(g) == 1}", "alone = set()"),
    M("TA06", "circuits/ablation/positions.py", "role-matched controls drawn from digits",
      "if not digit_role(roles[i][p]):", "if digit_role(roles[i][p]):"),
    M("TA07", "circuits/ablation/positions.py", "role-matched controls may hit the targets",
      "for i, p in torch.nonzero(region[name] & ~tmask).tolist():",
      "for i, p in torch.nonzero(region[name]).tolist():"),
    M("TA08", "circuits/ablation/positions.py", "role-matched controls one smaller than the target",
      "rng.choice(pool, size=k, replace=False)", "rng.choice(pool, size=k - 1, replace=False)"),
    M("TA09", "circuits/ablation/experiment.py", "random-control verdict without the p floor",
      'row["verdict"] = verdict(lo, row["p_value"], len(controls))',
      'row["verdict"] = "confirmed" if lo > 0 and row["p_value"] <= 0.05 else "not confirmed"'),
    M("TA10", "circuits/ablation/experiment.py", "intervals resample rows, not equations",
      "lo, hi = bootstrap_ci(diff, seed=seed, groups=groups)", "lo, hi = bootstrap_ci(diff, seed=seed)"),
    M("TA11", "circuits/ablation/experiment.py", "sign-flip p: ties with the observed mean not counted",
      "return float(np.mean(stats >= obs - tol)), 2 ** m - 1",
      "return float(np.mean(stats > obs + tol)), 2 ** m - 1"),
    M("TA12", "circuits/ablation/experiment.py", "sign-flip p: rows of one equation flipped apart",
      "d = pd.Series(x[keep]).groupby(g.to_numpy(), sort=False).mean().to_numpy()",
      "d = x[keep]"),
    # ---------------------------------------------------------------- circuit discovery (#24)
    M("CD01", "circuits/discovery/model.py", "receiver input: the cut adds the clean output back",
      "            diff = r - cur", "            diff = cur - r"),
    M("CD02", "circuits/discovery/model.py", "attention: no causal mask",
      "        if a.causal:\n", "        if False:\n"),
    M("CD03", "circuits/discovery/model.py", "heads' bias b_O left out of their outputs",
      'return torch.einsum("bhpe,hed->bhpd", z, a.W_O) + a.b_O / H',
      'return torch.einsum("bhpe,hed->bhpd", z, a.W_O)'),
    M("CD04", "circuits/discovery/model.py", "the key input read from the query's receivers",
      "q_in, k_in, v_in = part(xs[0], 0), part(xs[0], 1), part(xs[0], 2)",
      "q_in, k_in, v_in = part(xs[0], 0), part(xs[0], 0), part(xs[0], 2)"),
    M("CD05", "circuits/discovery/model.py", "T5 cross-attention keys not normed by the encoder's final norm",
      "kv_side=\"src\", kv_norm=enc.final_layer_norm)", "kv_side=\"src\", kv_norm=sa.layer_norm)"),
    M("CD06", "circuits/discovery/model.py", "only cut receivers updated: the add lands on the wrong ones",
      "x[:, active] += add.reshape(B, len(active), p, d)",
      "x[:, :len(active)] += add.reshape(B, len(active), p, d)"),
    M("CD07", "circuits/discovery/graph.py", "a sender at layer l also sends to its own layer",
      "                made[st.side] += len(st.senders)\n        self.names",
      "                made[st.side] += 0\n        self.names"),
    M("CD08", "circuits/discovery/graph.py", "the logits' edges at every group",
      'gs = [ans_group] if st.kind == "logits" else range(len(self.groups[side]))',
      "gs = range(len(self.groups[side]))"),
    M("CD09", "circuits/discovery/scores.py", "EAP-IG: the gradient at the corrupted end only",
      "        a = k / steps\n", "        a = (k - 1) / steps\n"),
    M("CD10", "circuits/discovery/scores.py", "attribution sign flipped",
      "    return -su.graph.gather(grads)", "    return su.graph.gather(grads)"),
    M("CD11", "circuits/discovery/scores.py", "exact: the score against the corrupted run",
      "scores[torch.tensor(part)] = m.mean(1) - base",
      "scores[torch.tensor(part)] = m.mean(1) - su.m_corrupt.mean()"),
    M("CD12", "circuits/discovery/scores.py", "mean ablation: the clean runs only",
      'su.ref = {s: torch.cat([outs["clean"][s], outs["corrupt"][s]]).mean(0, keepdim=True)',
      'su.ref = {s: outs["clean"][s].mean(0, keepdim=True)'),
    M("CD13", "circuits/discovery/faithfulness.py", "top-k by signed score, not |score|",
      "order = np.argsort(-scores.abs().numpy(), kind=\"stable\")",
      "order = np.argsort(-scores.numpy(), kind=\"stable\")"),
    M("CD14", "circuits/discovery/faithfulness.py", "pruning keeps nodes that reach nothing",
      "        if not drop:\n", "        if True:\n"),
    M("CD15", "circuits/discovery/faithfulness.py", "CMD without the absolute value",
      "np.trapezoid(np.abs(1 - f), x)", "np.trapezoid(1 - f, x)"),
    M("CD16", "circuits/discovery/faithfulness.py", "f: the empty circuit not subtracted",
      "return (m.mean(-1) - m_empty.mean(-1)) / gap", "return m.mean(-1) / gap"),
    M("CD17", "circuits/discovery/compare.py", "recall: the approximate top-k by signed score",
      "top_a = set(np.argsort(-np.abs(approx), kind=\"stable\")[:k].tolist())",
      "top_a = set(np.argsort(-approx, kind=\"stable\")[:k].tolist())"),
    M("CD18", "circuits/discovery/induction.py", "induction pairs: the answer token corrupted",
      "        c[k] = r[length]", "        c[k + 1] = r[length]"),
    M("CD19", "circuits/discovery/scores.py", "EAP-IG: the path from the corrupted embeddings under mean ablation",
      "start = {s: su.ref[s][:, 0].expand_as(su.inputs[\"clean\"][s]) for s in su.gm.sides}",
      "start = {s: su.inputs[\"corrupt\"][s] for s in su.gm.sides}"),
    M("CD20", "circuits/discovery/faithfulness.py", "knockout: controls drawn with the target's own edges",
      "pool_idx = (pool & keep & ~target).nonzero()[:, 0].numpy()",
      "pool_idx = (pool & keep).nonzero()[:, 0].numpy()"),
    M("CD21", "circuits/discovery/faithfulness.py", "knockout: the verdict without the control count",
      "\"verdict\": verdict(float(lo), p, n_controls)}", "\"verdict\": verdict(float(lo), p, 19)}"),
    # ---------------------------------------------------------------- tracr known circuits (#24)
    M("TR01", "circuits/discovery/known.py", "auroc: tied scores not given their average rank",
      'rank(method="average")', 'rank(method="first")'),
    M("TR02", "circuits/discovery/known.py", "auroc: signed scores ranked as they are",
      "vals = [abs(v) for v in vals] if absolute else vals", "vals = vals"),
    M("TR03", "circuits/discovery/known.py", "pairs: the corrupted input gives the same answer",
      "if o != outs[i]])", "if o == outs[i]])"),
    M("TR04", "circuits/discovery/known.py", "frac metric: the per-pair sign dropped",
      "return sign.repeat(rows // sign.shape[0]) *", "return sign.abs().repeat(rows // sign.shape[0]) *"),
    M("TR05", "circuits/discovery/known.py", "graph: an MLP does not receive its own layer's heads",
      "senders_before(layer, True)", "senders_before(layer)"),
    M("TR06", "circuits/discovery/known.py", "frac metric: the answer position's token left out",
      "return (ids[:, 1:pos + 1] == x_id)", "return (ids[:, 1:pos] == x_id)"),
    M("TR07", "interp/models/native.py", "spec: attention always causal",
      "attention_dir=self.attention, seed=0)", 'attention_dir="causal", seed=0)'),
    M("TR08", "interp/models/native.py", "spec: normalization always LayerNorm",
      'normalization_type=None if self.normalization == "none" else self.normalization,',
      'normalization_type="LN",'),
    M("TR09", "interp/models/native.py", "spec: default head width is d_model",
      "self.d_head = self.d_model // self.n_heads", "self.d_head = self.d_model"),
    M("TR10", "interp/models/native.py", "spec: d_vocab_out ignored",
      "d_vocab_out=self.d_vocab_out or self.d_vocab,", "d_vocab_out=self.d_vocab,"),
    M("TR11", "interp/models/native.py", "spec: act_fn ignored (always gelu_new)",
      "act_fn=self.act_fn, d_vocab_out", 'act_fn="gelu_new", d_vocab_out'),
    M("TR12", "circuits/discovery/known.py", "pairs: clean inputs drawn with replacement",
      "clean = rng.sample(range(len(pool)), n)", "clean = [rng.randrange(len(pool)) for _ in range(n)]"),
    # ---------------------------------------------------------------- the circuit report (#24)
    M("RP01", "interp/viz/circuit_figures.py", "edge width not scaled to the largest drawn",
      "width=1 + 7 * row.abs_score / top,", "width=1 + 7 * row.abs_score,"),
    M("RP02", "interp/viz/circuit_figures.py", "edge colour by the opposite sign",
      'sign = "+" if row.score >= 0 else "-"', 'sign = "+" if row.score <= 0 else "-"'),
    M("RP03", "interp/viz/circuit_figures.py", "legend draws every input solid",
      'line=dict(color="#444444", width=2, dash=DASHES[port]),',
      'line=dict(color="#444444", width=2, dash="solid"),'),
    M("RP04", "interp/viz/circuit_figures.py", "edges outside the circuit drawn",
      "inc = edges[edges.in_circuit.astype(bool)]", "inc = edges"),
    M("RP05", "interp/viz/circuit_figures.py", "one edge more than max_edges drawn",
      "drawn = merged.head(max_edges)", "drawn = merged.head(max_edges + 1)"),
    M("RP06", "interp/viz/circuit_figures.py", "groups of one edge: the largest, not the sum",
      '"abs_score": float(d.abs_score.sum())', '"abs_score": float(d.abs_score.max())'),
    M("RP07", "interp/viz/circuit_figures.py", "T5: the decoder drawn over the encoder",
      'start = {"enc": 1, "dec": n_enc + 2, "cross": n_enc + 2}',
      'start = {"enc": 1, "dec": 1, "cross": 1}'),
    M("RP08", "interp/viz/circuit_figures.py", "T5: cross-attention heads on the self-attention ones",
      'pos[n] = (x + 0.4, -float(i["head"]))', 'pos[n] = (float(x), -float(i["head"]))'),
    M("RP09", "interp/viz/circuit_figures.py", "node label unescaped in the hover",
      'return esc(name) + (f"<br>{esc(label)}" if label else "")',
      'return esc(name) + (f"<br>{label}" if label else "")'),
    M("RP10", "interp/viz/circuit_figures.py", "every edge dashed as a key",
      "dash=DASHES[port]),\n            opacity", 'dash=DASHES["k"]),\n            opacity'),
    M("RP11", "interp/viz/circuit_figures.py", "faithfulness on a linear x axis",
      'xaxis=dict(type="log"', 'xaxis=dict(type="linear"'),
    M("RP12", "interp/viz/circuit_figures.py", "reference line at 0.9, labelled 0.8",
      '(0.8, "f = 0.8")', '(0.9, "f = 0.8")'),
    M("RP13", "interp/viz/circuit_figures.py", "interval band's lower edge not reversed",
      "y=list(df.f_hi[band]) + list(df.f_lo[band])[::-1]",
      "y=list(df.f_hi[band]) + list(df.f_lo[band])"),
    M("RP14", "interp/viz/circuit_figures.py", "a method outside the fixed ones gets no colour",
      'out[m] = METHOD_COLOURS.get(m) or next(spare, "#333333")',
      "out[m] = METHOD_COLOURS.get(m)"),
    M("RP15", "interp/viz/circuit_figures.py", "the MLP drawn above the heads",
      "pos[n] = (x + 0.16, -n_heads + 0.3)", "pos[n] = (x + 0.16, 1.0)"),
    M("RP16", "interp/viz/circuit_figures.py", "hover of a merged edge lists no group",
      'parts = [f"{esc(g)} {v:+.3g}" for g, v in row.groups[:12]]', "parts = []"),
    M("RP17", "interp/viz/reports/discover.py", "a cut line keeps 100 characters and the dots",
      'line[:width - 3] + "..."', 'line[:width] + "..."'),
    M("RP18", "interp/viz/reports/discover.py", "size at f >= 0.8: f = 0.8 exactly not counted",
      "reached = f[f.f >= target]", "reached = f[f.f > target]"),
    M("RP19", "interp/viz/reports/discover.py", "NaN left in the JSON",
      "return v if math.isfinite(v) else None", "return v"),
    M("RP20", "interp/viz/reports/discover.py", "top edges: the smallest first",
      'top = frame.sort_values("rank").head(TOP)', 'top = frame.sort_values("abs_score").head(TOP)'),
    M("RP21", "interp/viz/reports/discover.py", "x/^/=: a stack-prefixed group missed",
      "inc.group.map(base_group).isin(groups)", "inc.group.isin(groups)"),
    M("RP22", "interp/viz/reports/discover.py", "x/^/=: edges outside the circuit counted",
      "    inc = frame[frame.in_circuit.astype(bool)]\n    total", "    inc = frame\n    total"),
    M("RP23", "interp/viz/reports/discover.py", "heads outside the circuit listed",
      'heads = nodes[(nodes.kind == "head") & nodes.in_circuit.astype(bool)]',
      'heads = nodes[nodes.kind == "head"]'),
    M("RP24", "interp/viz/reports/discover.py", "page: contents before the findings",
      "    out.findings(findings(data))\n    out.toc(SECTIONS)",
      "    out.toc(SECTIONS)\n    out.findings(findings(data))"),
    M("RP25", "interp/viz/reports/discover.py", "gap m(empty) - m(full)",
      "else m_full - m_empty,", "else m_empty - m_full,"),
    M("RP26", "interp/viz/reports/discover.py", "best f: the largest circuit, not the best",
      "best = f.loc[f.f.idxmax()]", "best = f.iloc[-1]"),
    M("RP27", "interp/viz/page.py", "details: the summary unescaped",
      'f"<details><summary>{html.escape(summary)}</summary>"', 'f"<details><summary>{summary}</summary>"'),
    M("RP28", "interp/viz/page.py", "details: a folded figure's plotly.js not embedded",
      "self.uses_plotly |= parts.uses_plotly", "pass"),
    M("RP29", "interp/viz/page.py", "section id is not the contents' link",
      """self.parts.append(f'<h{level} id="{anchor(text)}">""", """self.parts.append(f'<h{level} id="{text}">"""),
    M("RP30", "interp/viz/page.py", "findings unescaped",
      "{html.escape(line.strip())}</p>'", "{line.strip()}</p>'"),
    M("RP31", "interp/viz/reports/discover.py", "page's faithfulness legend: CPR and CMD swapped",
      'areas = {name: (m.get("cpr"), m.get("cmd"))', 'areas = {name: (m.get("cmd"), m.get("cpr"))'),
    M("RP32", "interp/viz/reports/discover.py", "x/^/=: the answer's own group not set apart",
      'if not t5 and out["answer_group"] in GUARD:', "if False:"),
    M("RP33", "interp/viz/reports/discover.py", "table: a position group named * kept on the edge",
      'if edge.endswith("@" + group):', 'if group != "*" and edge.endswith("@" + group):'),
    M("RP34", "interp/viz/circuit_figures.py", "a position group named * read as no positions",
      'positions = bool(inc.edge.astype(str).str.contains("@", regex=False).any())',
      'positions = bool((inc.group.astype(str) != "*").any())'),
    M("RP35", "interp/viz/reports/discover.py", "T5: cross-attention queries read as the encoder's",
      'and receiver.endswith((".k", ".v")))', 'and receiver.endswith((".q", ".k", ".v")))'),
    M("RP36", "interp/viz/reports/discover.py", "T5: the decoder's = counted as the input's",
      "side = inc.receiver.map(encoder_side) if t5", "side = inc.receiver.map(bool) if t5"),
    M("RP37", "interp/viz/reports/discover.py", "a head's weight misses the edges into its value",
      r'str.replace(r"\.[qkv]$"', r'str.replace(r"\.[qk]$"'),
    # ---------------------------------------- the patch and induction reports (PI)
    M("PI01", "interp/viz/reports/patch.py", "top cells: the largest signed share, not |share|",
      "df.normalised.abs().sort_values(ascending=False", "df.normalised.sort_values(ascending=False"),
    M("PI02", "interp/viz/reports/patch.py", "interval: the gap held at the whole sample's mean",
      "cm, bm = clean[idx].mean(1), bad[idx].mean(1)", "cm, bm = clean.mean(), bad.mean()"),
    M("PI03", "interp/viz/reports/patch.py", "noise: the share read as if denoising",
      'else (clean - v) / gap', 'else (v - bad) / gap'),
    M("PI04", "interp/viz/reports/patch.py", "colour range from the exact maps alone",
      "        for r in (res, att):\n            if r is not None:",
      "        for r in (res,):\n            if r is not None:"),
    M("PI05", "interp/viz/reports/patch.py", "a colour bar per map",
      "showscale=i == 0,", "showscale=True,"),
    M("PI06", "interp/viz/reports/patch.py", "a small share printed as +0.0%",
      'return signed(100 * float(v) + 0.0, 1) + "%"', 'return f"{100 * float(v):+.1f}%"'),
    M("PI07", "interp/viz/reports/patch.py", "the top-cells table not fitted to the terminal",
      "table = fit(shown(top), width=(width or width_now()) - 4, wide=wide)",
      "table = fit(shown(top), width=(width or width_now()) - 4, wide=True)"),
    M("PI08", "interp/viz/reports/induction.py", "constant baseline columns kept in the table",
      "heads[c].nunique(dropna=False) > 1", "heads[c].nunique(dropna=False) >= 1"),
    M("PI09", "interp/viz/reports/induction.py", "heads named head-first",
      'return f"L{int(layer)}H{int(head)}"', 'return f"L{int(head)}H{int(layer)}"'),
    M("PI10", "interp/viz/reports/induction.py", "every panel's axis spans every score",
      "own = [*vals.tolist(), b]", "own = [*heads[cols].astype(float).values.ravel().tolist(), b]"),
    M("PI11", "interp/viz/reports/induction.py", "bars drawn from 0, heights from the baseline",
      "base=b, name=SHORT[c],", "base=0, name=SHORT[c],"),
    M("PI12", "interp/viz/reports/induction.py", "a partial character's bytes as \\x escapes",
      'errors="interp-hexmark"', 'errors="backslashreplace"'),
    M("PI13", "interp/viz/reports/induction.py", "a small drop printed with three decimals",
      'return f"drop {interval(d, ci[0], ci[1])}, 95% CI"',
      'return f"drop {d:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}], 95% CI"'),
    # readable ablate, route knockout and probe results (#25): the minimum of test equations,
    # the maps' ranges, the knockouts' colours, findings first, tables that fit
    M("AP01", "interp/viz/reports/probe_maps.py", "every cell counts as reliable",
      "fillna(0) >= min_test", "fillna(0) >= 0"),
    M("AP02", "interp/viz/reports/probe_maps.py", "colour range from every cell, tiny ones too",
      "    ok = g[reliable(g)]\n    vals = pd.to_numeric", "    ok = g\n    vals = pd.to_numeric"),
    M("AP03", "interp/viz/reports/probe_maps.py", "R^2 not clipped on the map",
      "round(min(max(float(v), clip[0]), clip[1]), 4)", "round(float(v), 4)"),
    M("AP04", "interp/viz/reports/probe_maps.py", "tiny cells coloured under their mask",
      "cell(v, k) for v, k in zip(row, ks)", "cell(v, True) for v, k in zip(row, ks)"),
    M("AP05", "interp/viz/reports/probe_maps.py", "the baseline not marked on the colour bar",
      "if mark is not None and lo - 1e-6 <= mark <= hi + 1e-6:", "if False:"),
    M("AP06", "interp/viz/reports/probe.py", "most selective / best chosen among tiny cells too",
      "    ok = g[reliable(g)]\n    sel = ok.dropna", "    ok = g\n    sel = ok.dropna"),
    M("AP07", "interp/viz/reports/probe.py", "probe tables ignore --wide",
      "lines.append(fit(grid_table(g), width=w, wide=wide,",
      "lines.append(fit(grid_table(g), width=w, wide=False,"),
    M("AP08", "probes/__main__.py", "the causal check erases at tiny cells",
      "f = reliable_rows(full)", "f = full"),
    M("AP09", "probes/__main__.py", "--causal-at keeps tiny cells",
      "keys = [k for k in own if k in chosen and k in ok]",
      "keys = [k for k in own if k in chosen]"),
    M("AP10", "interp/viz/reports/routes.py", "error bars in plotly's cycled colours",
      ".tolist(), color=colour(i)),", ".tolist()),"),
    M("AP11", "interp/viz/reports/routes.py", "markers in plotly's cycled colours",
      "marker=dict(color=colour(i), size=9)", "marker=dict(size=9)"),
    M("AP12", "interp/viz/reports/routes.py", "route page: contents before the findings",
      "    page.findings(findings(res))\n    rd = getattr(res, \"reads\", None)\n"
      "    has_reads = rd is not None and len(rd)\n"
      "    page.toc([t for t in SECTIONS if has_reads or t != \"Reads K\"])",
      "    rd = getattr(res, \"reads\", None)\n    has_reads = rd is not None and len(rd)\n"
      "    page.toc([t for t in SECTIONS if has_reads or t != \"Reads K\"])\n"
      "    page.findings(findings(res))"),
    M("AP13", "interp/viz/reports/routes.py", "the route table ignores --wide",
      'text = fit(t.drop(columns="knockout"), width=w - 2, wide=wide,',
      'text = fit(t.drop(columns="knockout"), width=w - 2, wide=False,'),
    M("AP14", "interp/viz/reports/ablate.py", "ablation findings without the verdicts",
      "    out += verdict_lines(res, metric)", "    pass"),
    # ------------------------------------------------ the classify page (#25), prefix CP
    M("CP01", "interp/viz/figures.py", "maps: plotly chooses which ticks to label",
      '"tickmode": "array"', '"tickmode": "auto"'),
    M("CP02", "interp/viz/figures.py", "route maps: the given group order ignored",
      "    want = [g for g in order if g in set(have)]", "    want = []"),
    M("CP03", "interp/viz/figures.py", "tick labels at 9 px",
      "TICK_FONT = 10 ", "TICK_FONT = 9 "),
    M("CP04", "interp/viz/reports/classify.py", "equation order: a later example's group appended",
      "                order.insert(at + 1, g)", "                order.append(g)"),
    M("CP05", "interp/viz/reports/classify.py", "the no-root group drawn as 'nan'",
      'RENAME = {"nan": "nan (no root)"}', 'RENAME = {}'),
    M("CP06", "interp/viz/reports/classify.py", "verification table: unchecked heads not said",
      'out["check"] = [c if ok else "not checked"', 'out["check"] = [c if ok else c'),
    M("CP07", "interp/viz/reports/classify.py", "findings: the interval's ends swapped",
      "f\"{interval(r.verify_effect, r.verify_ci_lo, r.verify_ci_hi)}, \"",
      "f\"{interval(r.verify_effect, r.verify_ci_hi, r.verify_ci_lo)}, \""),
    M("CP08", "interp/viz/reports/classify.py", "findings: kinds' label counts summed over all kinds",
      "total = counts.loc[[kind]].sum()", "total = counts.sum()"),
    M("CP09", "interp/viz/page.py", "folded figures drawn at load",
      "        parts = [lazy_plot(p) for p in parts]\n", "        parts = list(parts)\n"),
    M("CP10", "interp/viz/page.py", "circuitsvis headings kept",
      "    return _HEADING.sub(lambda m:", "    return text or _HEADING.sub(lambda m:"),
    M("CP11", "interp/viz/page.py", "a foreign plotly.min.js overwritten",
      "        if same:\n            return path\n", "        if True:\n            return write_atomic(path, text)\n"),
    M("CP12", "interp/viz/figures.py", "panels named without their attention kind",
      'titles.get(h, f"{kind_name(h[0])} L{h[1]}H{h[2]}")', 'titles.get(h, f"L{h[1]}H{h[2]}")'),
    # ---------------------------------------------------------------- circuitsvis charts (BC)
    M("BC01", "interp/viz/page.py", "charts built with their view, all in one task",
      "    out, n = _CHART_MOUNT.subn(sub, text)\n", "    out, n = text, 1\n"),
    M("BC02", "interp/viz/page.py", "a deferred chart built from its first render's props",
      'f"try{{{canvas}.current.__interpBuild()}}', 'f"try{{{build}()}}'),
    M("BC03", "interp/viz/page.py", "a built chart not marked: drawn before its charts",
      '({canvas}.current.dataset.interpBuilt=1)', '0'),
    # ---------------------------------------------------------------- readable head tables (TX)
    M("TX01", "interp/attention/routes.py", "route text: groups written unquoted",
      'return f"{quote_group(query)}->{\',\'.join(quote_group(k) for k in keys)}"',
      'return f"{query}->{\',\'.join(keys)}"'),
    M("TX02", "interp/attention/groups.py", "quote: any name without a quote counts as plain",
      '_PLAIN = re.compile(r"[A-Za-z0-9_]+")', '_PLAIN = re.compile(r"[^\',]+")'),
    M("TX03", "interp/attention/groups.py", "read groups: escapes not undone",
      'if text[j] == "\\\\" and j + 1 < n:\n                    j += 1\n',
      'if False:\n                    j += 1\n'),
    M("TX04", "interp/attention/routes.py", "split route: an arrow inside quotes splits",
      "elif not quoted and (text.startswith", "elif (text.startswith"),
    M("TX05", "interp/attention/readout.py", "stability: every group once (no resampling)",
      "counts = rng.multinomial(len(parts), [1 / len(parts)] * len(parts))",
      "counts = [1] * len(parts)"),
    M("TX06", "interp/attention/stats.py", "combine: the counts of a resample ignored",
      "setattr(out, name, sum((getattr(p, name) * c for p, c in used),",
      "setattr(out, name, sum((getattr(p, name) for p, c in used),"),
    M("TX07", "interp/attention/stats.py", "parts: every example in the first group",
      "m = index % parts == g", "m = (index % parts == g) | (g == 0)"),
    M("TX08", "interp/attention/readout.py", "score kind: broad heads scored as plain entropy",
      '"routed": "route_share", "broad": "entropy_ratio"',
      '"routed": "route_share", "broad": "entropy"'),
    M("TX09", "interp/attention/groups.py", "token classes: no subword after letters",
      "or not prev[-1:].isalnum())", "or True)"),
    M("TX10", "interp/attention/groups.py", "token class: whitespace counted as punctuation",
      'if not core:\n        return "whitespace"', 'if not core:\n        return "punctuation"'),
    M("TX11", "interp/attention/groups.py", "the task role nan kept as it is",
      'RENAMED = {"nan": "no_root"}', "RENAMED = {}"),
    M("TX12", "interp/attention/table_text.py", "terminal: the width ignored",
      "limit = None if wide else (width or width_now())", "limit = None"),
    M("TX13", "interp/attention/table_text.py", "terminal: effects with three decimals",
      "effect = lambda x: signed(x, 3)", 'effect = lambda x: f"{x:+.3f}"'),
    M("TX14", "circuits/ablation/routes.py", "verify_heads: silent by default",
      "if progress is None and not quiet:", "if progress is None and quiet:"),
    M("TX15", "circuits/ablation/routes.py", "label knockout: key groups split at commas",
      "keys=_names(\",\".join(k), label, k)", "keys=_names(\",\".join(k), label)"),
    # ---------------------------------------------------------------- native decoders (NF)
    M("NF01", "circuits/patching/fast_native.py", "smeared key at p mixed without the key of p - 1",
      "prev = raw_c[:, p - 1:p].repeat(rep, 1, 1) if p > 0 else None", "prev = None"),
    M("NF02", "circuits/patching/fast_native.py", "the last layer reads the first query, not the answer's",
      "            q = q[:, :, -1:]", "            q = q[:, :, :1]"),
    M("NF03", "circuits/patching/fast_native.py", "causal mask: a query does not see its own key",
      "[None, :] > qpos", "[None, :] >= qpos"),
    M("NF04", "circuits/patching/fast_native.py", "bidirectional attention taken on the fast path",
      'if not getattr(attn, "causal", False) or getattr', "if getattr"),
    M("NF05", "circuits/patching/fast_native.py", "a head's change enters through the next head's output columns",
      "reshape(H, tail.dh, -1)[heads]", "reshape(H, tail.dh, -1)[[(h + 1) % H for h in heads]]"),
    M("NF06", "circuits/patching/fast_native.py", "attn_out: the patched layer's attention run again",
      "out = tail.logits_from(l, r, p, mid=True)", "out = tail.logits_from(l, r, p)"),
    M("NF07", "circuits/patching/fast_native.py", "mlp_out: the change added before the MLP, not after it",
      "r = rc[post[l]][:, p:].clone()", "r = mid.clone()"),
    M("NF08", "circuits/patching/fast_native.py", "smeared keys: the weights of the key and its neighbour swapped",
      "smeared = w * k[:, 1:] + (1 - w) * k[:, :-1]",
      "smeared = (1 - w) * k[:, 1:] + w * k[:, :-1]"),
    M("NF09", "circuits/patching/fast_native.py", "keys and values before p from the source run",
      "tail.fill([rc[n] for n in pre])", "tail.fill([sc.get(n, rc[n]) for n in pre])"),
    M("NF10", "circuits/patching/fast_native.py", "the last layer's MLP skipped",
      "            if lay.has_mlp:", "            if lay.has_mlp and not last:"),
    M("NF11", "circuits/patch.py", "attention-only language model: mlp_out in the default sites",
      'default = default.replace("mlp_out,", "")', "default = default"),
    M("NF12", "circuits/patch.py", "a language model: --answer-token accepted and ignored",
      '("--answer-token", a.answer_token != "first")', '("--answer-token", False)'),
    # ---------------------------------------------------------------- AtP* (#26, AS)
    M("AS01", "circuits/patching/atp.py", "GradDrop: the dropped layer keeps its gradient",
      "kept = pres[l] + (t - pres[l]).detach()", "kept = t"),
    M("AS02", "circuits/patching/atp.py", "GradDrop: the cell's own layer drop counted",
      "own[torch.arange(L), torch.arange(L) + 1] = False", "pass"),
    M("AS03", "circuits/patching/atp.py", "QK fix: the linear QK term not subtracted",
      "out[part] += exact - lin", "out[part] += exact"),
    M("AS04", "circuits/patching/atp.py", "QK fix: resid_pre skips its own layer's keys",
      'first = layer if s.name == "resid_pre" else layer + 1', "first = layer + 1"),
    M("AS05", "circuits/patching/atp.py", "QK fix: scores not scaled by sqrt(d_head)",
      "scores = scores / (tail.dh ** 0.5)", "scores = scores"),
    M("AS06", "circuits/patching/atp.py", "QK fix: no causal mask",
      "future = torch.arange(t, device=q.device)[None, :] > rows[:, None]",
      "future = torch.arange(t, device=q.device)[None, :] > t"),
    M("AS07", "circuits/patching/atp.py", "GradDrop: the sign of the undropped estimate lost",
      "sign = torch.where(est[..., 0, :] < 0, -1.0, 1.0)", "sign = 1.0"),
    M("AS08", "circuits/patching/atp.py", "GradDrop: mean over every layer, not the kept ones",
      "(est.abs() * mask).sum(-2) / n.clamp(min=1)", "(est.abs() * mask).sum(-2) / L"),
    M("AS09", "circuits/patching/atp.py", "QK fix with values: the values held anyway",
      "            if not with_values:\n                v = v0.expand(c, *v0.shape)",
      "            if True:\n                v = v0.expand(c, *v0.shape)"),
    M("AS10", "circuits/patching/atp.py", "head_pos: writes placed at the wrong positions",
      "torch.arange(t, device=delta.device).repeat(tail.H)",
      "torch.arange(t, device=delta.device).repeat_interleave(tail.H)"),
    M("AS11", "circuits/patching/atp.py", "QK fix: the cell's own query left unpatched",
      "q[ci[read_by], :, :, at[ps[read_by]]] = nq[read_by]", "pass"),
    M("AS12", "circuits/patching/atp.py", "QK fix: only the last query row recomputed",
      "rows = (grad_z[r].abs().amax((0, 1, 2, 4)) > 0).nonzero().flatten()",
      "rows = (grad_z[r].abs().amax((0, 1, 2, 4)) > 0).nonzero().flatten()[-1:]"),
    M("AS13", "circuits/patching/experiments.py", "attribute: a method's GradDrop half ignored",
      "graddrop = METHODS[method][1] if graddrop is None else graddrop",
      "graddrop = False if graddrop is None else graddrop"),
    M("AS14", "circuits/patching/compare.py", "agreement: cells ranked by signed share",
      'return np.argsort(-np.abs(v), kind="stable")', 'return np.argsort(-v, kind="stable")'),
    M("AS15", "circuits/patching/compare.py", "agreement: Pearson is Spearman",
      'row["pearson"] = float(stats.pearsonr(e, a)[0])',
      'row["pearson"] = float(stats.spearmanr(e, a)[0])'),
    M("AS16", "circuits/patching/compare.py", "agreement: the best rank of the exact top 10",
      'int(rank[oe[:10]].max())', 'int(rank[oe[:10]].min())'),
    M("AS17", "circuits/patching/compare.py", "agreement: the underestimate by signed share",
      "i = int(np.argmax(np.abs(e) - np.abs(a)))", "i = int(np.argmax(e - a))"),
    M("AS18", "circuits/patching/compare.py", "site title: the method's name dropped",
      'name = METHOD_NAMES.get(row["method"], row["method"])', 'name = "attribution"'),
    # ---------------------------------------------------------------- sweeps over processes (SH)
    M("SH01", "circuits/ablation/route_shards.py", "--verify groups: a group at every knockout "
      "(a stacked pass split between processes)",
      "        if i == 0 or (i * per) % period == 0:", "        if True:"),
    M("SH02", "circuits/ablation/route_shards.py", "--verify groups: one group a layer (larger "
      "than a pass needs)",
      "        if i == 0 or (i * per) % period == 0:", "        if i == 0:"),
    M("SH03", "interp/distributed.py", "in rounds: a process runs another's unit",
      "        mine = [(r + me, work(units[r + me]))] if r + me < len(units) else []",
      "        mine = [(r + me, work(units[min(r + size_ - 1 - me, len(units) - 1)]))] "
      "if r + me < len(units) else []"),
    M("SH04", "interp/distributed.py", "in rounds: the last, short round dropped",
      "    for r in range(0, len(units), size_):",
      "    for r in range(0, len(units) - len(units) % size_, size_):"),
    M("SH05", "interp/distributed.py", "shared groups: only each group's first item",
      "    return [x for g in mine for x in g]", "    return [g[0] for g in mine]"),
    M("SH06", "probes/__main__.py", "causal cells not shared out: every process checks all",
      'for t, st, layer, keys in distributed.shard(cells, "causal checks"):',
      "for t, st, layer, keys in cells:"),
    M("SH07", "interp/classify_heads.py", "--verify refused under a launch",
      "    if not a.verify:                    # the taxonomy alone is not shared out",
      "    if True:"),
    M("SH08", "circuits/ablation/routes.py", "a knockout's controls depend on the process",
      "        rng = np.random.default_rng([seed, zlib.crc32(ko.spec.encode())])",
      "        rng = np.random.default_rng([seed + distributed.rank(), "
      "zlib.crc32(ko.spec.encode())])"),
    # models split across devices (DM): what a device map may name, and where modules run
    M("DM01", "interp/models/devmap.py", "device map: cpu:7 taken for the CPU",
      "if d.index not in (None, 0):", "if False:"),
    M("DM02", "interp/models/devmap.py", "device map: one GPU past the last accepted",
      "if index >= count:", "if index > count:"),
    M("DM03", "interp/models/devmap.py", "device map: disk offload let through to torch",
      'if dev.strip().lower() in ("disk", "meta"):', 'if dev.strip().lower() in ("meta",):'),
    M("DM04", "interp/models/devmap.py", "device map: a JSON array read as a path",
      'elif text[:1] not in ("{", "["):', 'elif text[:1] not in ("{",):'),
    M("DM05", "interp/models/devmap.py", "device map: names that are no module accepted",
      "unknown = [k for k in placement if k not in modules]", "unknown = []"),
    M("DM06", "interp/models/devmap.py", "device map: nested entries accepted",
      'if a != b and (a == "" or b.startswith(a + ".")):', 'if a != b and a == "":'),
    M("DM07", "interp/models/devmap.py", "device map: tensors left without a device",
      "            if key is None:\n", "            if key is None and False:\n"),
    M("DM08", "interp/models/devmap.py", "device map: tied weights split apart",
      "if placement[seen[1]] != placement[key]:", "if False:"),
    M("DM09", "interp/models/devmap.py", "dispatch: modules run where their input is",
      "AlignDevicesHook(execution_device=dev,", "AlignDevicesHook(execution_device=None,"),
    M("DM10", "interp/models/devmap.py", "bridge components take their inputs anywhere",
      'getattr(module, "_interp_mover", None) is None:', "False:"),
    # ------------------------------------------- the launcher, failures in a worker (LN)
    M("LN01", "interp/launch.py", "the launcher drops the last argument",
      'elastic_launch(config, sys.executable)("-m", module, *argv)',
      'elastic_launch(config, sys.executable)("-m", module, *argv[:-1])'),
    M("LN02", "interp/cli/common.py", "the error path prints in every worker",
      "    if not launch.worker_error(line[len(\"error: \"):] if line.startswith(\"error: \") else line,\n"
      "                               refusal):\n"
      "        print(line, file=sys.stderr)",
      "    launch.worker_error(line[len(\"error: \"):] if line.startswith(\"error: \") else line,\n"
      "                        refusal)\n"
      "    print(line, file=sys.stderr)"),
    M("LN03", "interp/distributed.py", "the collectives' timeout not passed",
      "_STATE = PartialState(cpu=not on_cuda, timeout=timedelta(seconds=timeout_s()))",
      "_STATE = PartialState(cpu=not on_cuda)"),
    M("LN12", "interp/distributed.py", "the backend from the machine, not the command's device",
      "on_cuda = torch.cuda.is_available() and (_DEVICE is None or _DEVICE.startswith(\"cuda\"))",
      "on_cuda = torch.cuda.is_available()"),
    M("LN04", "interp/launch.py", "the failure line names the last failure, not the first",
      "_, _, r, text, kind = min(first)", "_, _, r, text, kind = max(first)"),
    M("LN05", "interp/launch.py", "a refusal every worker made alike given as one worker's",
      "if len(causes) == n and len({text for _, text, _ in causes.values()}) == 1:",
      "if False:"),
    M("LN06", "interp/launch.py", "a killed main worker's lock and temporaries left",
      "    except ChildFailedError as e:\n        clean_up(outputs)\n",
      "    except ChildFailedError as e:\n"),
    M("LN07", "interp/launch.py", "--nproc 0 accepted",
      "if not 1 <= v <= MAX_NPROC:", "if not 0 <= v <= MAX_NPROC:"),
    M("LN08", "interp/launch.py", "a worker relaunches itself again",
      "    if distributed.launched():\n        world =", "    if False:\n        world ="),
    M("LN09", "interp/launch.py", "workers the launcher stopped (SIGTERM) taken for the cause",
      "code < 0 and -code != signal.SIGTERM and r not in causes",
      "code < 0 and r not in causes"),
    M("LN10", "interp/cli/common.py", "a worker's unexpected exception not handed over",
      "        if launch.worker_error(unexpected(e)):\n            return 1\n", ""),
    M("LN11", "interp/launch.py", "more processes than cores accepted",
      "    elif nproc > cores():", "    elif False:"),
    M("LN13", "interp/launch.py", "a failed worker leaves through the interpreter's exit",
      "        os._exit(code)\n", "        return code\n"),
    M("LN14", "interp/launch.py", "a stop during the worker's failure escapes as a traceback",
      "    except Terminated:\n        code = 143\n", ""),
    M("LN15", "interp/launch.py", "a first refusal of the input named as one process's failure",
      'return text if kind == "input" else', 'return text if False else'),
    M("LN16", "interp/cli/common.py", "a worker's refusal of the input handed over as any failure",
      '_say(f"error: {one_line(str(e))}", refusal=True)', '_say(f"error: {one_line(str(e))}")'),
    M("TF01", "circuits/patching/fast_t5.py",
      "T5 fast path: the cached self keys of the wrong positions",
      "k0, v0 = (t[:, :, :p].repeat(rep, 1, 1, 1) for t in self_kv[j])",
      "k0, v0 = (t[:, :, 1:p + 1].repeat(rep, 1, 1, 1) for t in self_kv[j])"),
    M("TF02", "circuits/patching/fast_t5.py",
      "T5 fast path: the decoder bias of the first queries, not those run",
      "bias[:, :, qpos:]", "bias[:, :, :q.shape[2]]"),
    M("TF03", "circuits/patching/fast_t5.py",
      "T5 fast path: the cross keys/values not recomputed for an encoder patch",
      "ckv = [tail.kv(lay.attns[1], enc_out) for lay in tail.dec]",
      "ckv = [tail.kv(lay.attns[1], tail.enc_ln(acts[enc_last]).repeat(k, 1, 1)) "
      "for lay in tail.dec]"),
    M("TF04", "circuits/patching/fast_t5.py",
      "T5 fast path: every copy patches the first head of its unit",
      "z[i * B:(i + 1) * B, :, c[1]] = sc[names[l]][:, src_at, c[1]]",
      "z[i * B:(i + 1) * B, :, cells[0][1]] = sc[names[l]][:, src_at, cells[0][1]]"),
    M("TF05", "circuits/patching/fast_t5.py",
      "T5 fast path: the decoder's bias bucketed as bidirectional",
      "rel, bidirectional=not causal,", "rel, bidirectional=True,"),
    M("TF06", "circuits/patching/fast_t5.py",
      "T5 fast path: a cross-attention patch re-runs the cross-attention",
      'return "mid2", "mid", 2', 'return "mid2", "mid", 1'),
    M("TF07", "circuits/patching/fast_t5.py",
      "T5 fast path: the encoder's mlp_out added to the residual before attention",
      'return "post", "mid" if stack == "enc" else "mid2", None',
      'return "post", "pre" if stack == "enc" else "mid2", None'),
    M("TF08", "circuits/patching/fast_t5.py",
      "T5 fast path: after an encoder patch the decoder skips layer 0's cross",
      "out = tail.decode(0, 1, r0,", "out = tail.decode(0, 2, r0,"),
    M("TF09", "circuits/patching/fast_t5.py",
      "T5 fast path: cells of different positions run as one unit",
      'groups.setdefault((cell[0], cell[-1] if "pos" in s.axes else 0), []).append(cell)',
      "groups.setdefault((cell[0], 0), []).append(cell)"),
    M("TF10", "circuits/patching/fast_t5.py",
      "T5 fast path: the decoder's MLP reads the residual before the cross-attention",
      'res["mid2"] = [m + acts[c] for m, c in zip(res["mid"], hooks["hook_cross_attn_out"])]',
      'res["mid2"] = [m + 0 * acts[c] for m, c in zip(res["mid"], hooks["hook_cross_attn_out"])]'),
    M("TF11", "circuits/patching/fast_t5.py",
      "T5 fast path: the decoder output scaled when the config says not to",
      'self.scale = bool(getattr(hf.config, "scale_decoder_outputs", False))',
      'self.scale = not bool(getattr(hf.config, "scale_decoder_outputs", False))'),
    M("TF12", "circuits/patching/fast_t5.py",
      "T5 fast path: the encoder's attention re-run for an attn_out patch",
      "if stage == 0 or not first:", "if True:"),
    M("TF13", "circuits/patching/fast_t5.py",
      "T5 fast path: the patched encoder layer's MLP skipped at the patched position",
      "r[:, at] = _clamp(m + tail.ff(tail.enc[l], m))", "r[:, at] = _clamp(m)"),
]

def select(mutants, module: str | None, only: str | None):
    out = list(mutants)
    if module:
        out = [m for m in out if module in m.module]
    if only:
        want = {x.strip() for x in only.split(",") if x.strip()}
        unknown = want - {m.id for m in mutants}
        if unknown:
            raise SystemExit(f"error: unknown mutant ids {sorted(unknown)}; see --list")
        out = [m for m in out if m.id in want]
    return out


def apply(text: str, m: Mutant) -> str:
    n = text.count(m.old)
    if n != 1:
        raise SystemExit(f"error: mutant {m.id} ({m.module}): the text to replace occurs {n} "
                         "times, expected once; update the mutant list to the current code")
    return text.replace(m.old, m.new)


def make_copy() -> Path:
    dest = Path(tempfile.mkdtemp(prefix="mut-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", "checkpoints")
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    for name in LINK:
        (dest / name).symlink_to(ROOT / name, target_is_directory=True)
    return dest


def env_for(copy: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1",
                HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")


def check_copy_is_imported(copy: Path, python: str) -> None:
    code = "import interp, circuits; print(interp.__file__); print(circuits.__file__)"
    out = subprocess.run([python, "-c", code], cwd=copy, env=env_for(copy), capture_output=True,
                         text=True, timeout=120)
    paths = out.stdout.split()
    if out.returncode or len(paths) != 2 or not all(p.startswith(str(copy)) for p in paths):
        raise SystemExit(f"error: the copy's packages are not the ones imported ({out.stdout!r} "
                         f"{out.stderr[-500:]!r}); a mutant would be tested against the checkout")


#: --tests: one list of test files for every mutant instead of TESTS (a quick re-check: a
#: mutant these kill is killed by its module's list too, which runs them first)
OVERRIDE: list[str] = []


def test_args(module: str, copy: Path) -> list[str]:
    """The module's test files that exist in the copy (node ids: their file must exist), and
    options such as --deselect."""
    wanted = OVERRIDE or TESTS[module]
    files = [t for t in wanted if not t.startswith("-") and (copy / t.split("::")[0]).exists()]
    return files + [t for t in wanted if t.startswith("-")]


def pytest_cmd(python: str, module: str, copy: Path) -> list[str]:
    return [python, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider",
            "--no-header", "-o", "addopts=", *test_args(module, copy)]


def baseline(module: str, copy: Path, python: str, timeout: float) -> str:
    """'' when the module's tests pass on the unmutated copy, else what failed."""
    try:
        proc = subprocess.run(pytest_cmd(python, module, copy), cwd=copy, env=env_for(copy),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timeout after {timeout:.0f}s"
    if proc.returncode == 0:
        return ""
    hit = re.search(r"^(?:FAILED|ERROR) (\S+)", proc.stdout + proc.stderr, re.M)
    return hit.group(1) if hit else (proc.stdout + proc.stderr)[-300:]


def run_one(m: Mutant, copy: Path, python: str, timeout: float) -> dict:
    path = copy / m.module
    original = path.read_bytes()
    digest = hashlib.sha256(original).hexdigest()
    t0 = time.time()
    try:
        path.write_text(apply(original.decode(), m))
        cmd = pytest_cmd(python, m.module, copy)
        try:
            proc = subprocess.run(cmd, cwd=copy, env=env_for(copy), capture_output=True,
                                  text=True, timeout=timeout)
            out = proc.stdout + proc.stderr
            if proc.returncode == 0:
                status, by = "survived", ""
            elif proc.returncode == 1:
                status = "killed"
                hit = re.search(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
                by = hit.group(1) if hit else "?"
            else:
                status, by = "killed", f"pytest exit {proc.returncode}: " + \
                    (out.strip().splitlines() or ["?"])[-1][:80]
        except subprocess.TimeoutExpired:
            status, by = "killed", f"timeout after {timeout:.0f}s"
    finally:
        path.write_bytes(original)
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise SystemExit(f"error: could not restore {path} after mutant {m.id}")
    if m.equivalent and status == "survived":
        status = "equivalent"
    return {"id": m.id, "module": m.module, "what": m.what, "status": status, "by": by,
            "seconds": round(time.time() - t0, 1), "equivalent": m.equivalent}


def scores(results: list[dict]) -> dict[str, tuple[int, int, int]]:
    """module -> (killed, survived, equivalent), plus 'all'."""
    out: dict[str, list[int]] = {}
    for r in results:
        for key in (r["module"], "all"):
            s = out.setdefault(key, [0, 0, 0])
            s[("killed", "survived", "equivalent").index(r["status"])] += 1
    return {k: tuple(v) for k, v in out.items()}


def score_line(k: int, s: int, e: int) -> str:
    n = k + s
    return f"{k}/{n} killed = {k / n:.0%}" + (f" ({e} equivalent, not counted)" if e else "") \
        if n else f"no counted mutants ({e} equivalent)"


def markdown(before: list[dict], after: list[dict]) -> str:
    """A before/after table per module (after: results of a later run, e.g. of the
    survivors; a mutant missing from it keeps its earlier result)."""
    later = {r["id"]: r for r in after}
    merged = [later.get(r["id"], r) for r in before]
    b, a = scores(before), scores(merged)
    lines = ["| module | mutants | equivalent | killed before | killed after |",
             "| --- | --- | --- | --- | --- |"]
    for key in [k for k in b if k != "all"] + ["all"]:
        kb, sb, eb = b[key]
        ka, sa, ea = a.get(key, (0, 0, 0))
        name = "**all**" if key == "all" else f"`{key}`"
        lines.append(f"| {name} | {kb + sb + eb} | {ea} | {kb}/{kb + sb} ({kb / max(1, kb + sb):.0%}) "
                     f"| {ka}/{ka + sa} ({ka / max(1, ka + sa):.0%}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    global ROOT
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--module", help="only mutants of modules whose path contains this")
    p.add_argument("--only", help="comma-separated mutant ids")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--timeout", type=float, default=600, help="seconds per mutant (default 600)")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the check that each module's tests pass without a mutant")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs pytest")
    p.add_argument("--root", type=Path, default=ROOT,
                   help="the checkout to mutate (default: the one holding this script), e.g. "
                        "a snapshot taken before tests were added")
    p.add_argument("--markdown", nargs="+", metavar="JSONS",
                   help="print a before/after table from --json result files: BEFORE "
                        "[AFTER], each a comma-separated list of files")
    p.add_argument("--tests", help="comma-separated test files/ids run for every chosen mutant "
                                   "instead of its module's list")
    args = p.parse_args(argv)
    ROOT = args.root.resolve()
    OVERRIDE[:] = args.tests.split(",") if args.tests else []
    if args.markdown:
        load = lambda spec: [r for f in spec.split(",") if f  # noqa: E731
                             for r in json.loads(Path(f).read_text())["results"]]
        print(markdown(load(args.markdown[0]),
                       load(args.markdown[1]) if len(args.markdown) > 1 else []))
        return 0
    chosen = select(MUTANTS, args.module, args.only)
    ids = [m.id for m in MUTANTS]
    assert len(ids) == len(set(ids)), "duplicate mutant ids"
    for m in MUTANTS:   # every mutant must still apply to the checkout's code
        apply((ROOT / m.module).read_text(), m)
    if args.list:
        for m in chosen:
            print(f"{m.id}  {m.module:<30} {m.what}" + ("  [equivalent]" if m.equivalent else ""))
        print(f"{len(chosen)} mutants")
        return 0
    if not chosen:
        print("error: no mutant matches", file=sys.stderr)
        return 2
    copy = make_copy()
    results = []
    try:
        check_copy_is_imported(copy, args.python)
        print(f"{'id':<4} {'module':<30} {'result':<10} {'s':>5}  mutant / killed by", flush=True)
        broken = {}
        for m in chosen:
            if m.module not in broken:
                broken[m.module] = "" if args.no_baseline else \
                    baseline(m.module, copy, args.python, args.timeout)
                if broken[m.module]:
                    print(f"     {m.module:<30} its tests fail without a mutant "
                          f"({broken[m.module]}): its mutants are not run", flush=True)
            if broken[m.module]:
                continue
            r = run_one(m, copy, args.python, args.timeout)
            results.append(r)
            print(f"{r['id']:<4} {r['module']:<30} {r['status']:<10} {r['seconds']:>5.0f}  "
                  f"{r['what']}" + (f"  <- {r['by']}" if r["by"] else ""), flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    print("\nmutation score per module:")
    sc = scores(results)
    for key, (k, s, e) in sc.items():
        print(f"  {key:<30} {score_line(k, s, e)}")
    surv = [r for r in results if r["status"] == "survived"]
    if surv:
        print("\nsurvivors:")
        for r in surv:
            print(f"  {r['id']} {r['module']}: {r['what']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "scores": sc}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
