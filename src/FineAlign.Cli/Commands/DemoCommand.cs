using System.Diagnostics;
using System.Globalization;
using FineAlign.Trainers;
using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Text;
using Spectre.Console;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign demo</c>: from nothing to a comparison of alignment methods on the built-in review corpus. Every stage is
/// a plain <c>finealign</c> command run in-process (so the report can list them as the recipe to reproduce it), then all
/// policies are evaluated on held-out prompts against the ground truth and the report is written.
/// A stage whose folder already holds a <c>run_info.json</c> with the same command is skipped, so an interrupted demo
/// continues where it stopped; a half-finished stage is restarted from scratch (stages are short).
/// </summary>
public static class DemoCommand
{
    /// <summary>One step of the pipeline: a finealign command line, or (Args empty) work done by the demo itself.</summary>
    internal sealed record Stage(string Name, string What, string[] Args, double ExpectedSeconds, string Method = "", string Signal = "");

    /// <summary>
    /// Sizes of a demo run. <see cref="Full"/>: 7:48 measured on 2 quiet cores, plus a fresh clone's build (DEMO.md); <see cref="Quick"/> about 1.
    /// 650 pretraining steps (≈ +2.2 min over 400 on the quiet machine) give an SFT base with 99.9 % corpus words and 91.1 % ± 2.8 well-formed
    /// responses of ~22 words over seeds 42–44 (400 steps: 86.3 % ± 7.5; DEMO.md).
    /// </summary>
    internal sealed record Budget(string Preset, int Context, int VocabSize, int PretrainSteps, double PretrainLr, int SftSteps, int RmSteps, int TlcrSteps,
        int PpoBatches, int PpoBatchSize, int PpoMiniBatch, int OfflineSteps, int BatchSize, int MaxNewTokens, int EvalPrompts, int EvalSamples,
        int[] BonN, int CorpusSize, int CurvePoints)
    {
        public static readonly Budget Full = new("small", 256, 1024, 650, 2e-3, 200, 60, 50, 20, 16, 8, 40, 16, 64, 64, 1, [1, 2, 4, 8], 4000, 4);
        public static readonly Budget Quick = new("tiny", 128, 400, 30, 1e-3, 20, 10, 10, 4, 8, 4, 8, 8, 16, 8, 1, [1, 2, 4], 400, 2);
    }

    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("demo",
            "From nothing to a comparison of alignment methods, on the built-in review corpus (no downloads): pretrain + SFT a small model, " +
            "train a sequence reward model and a TLCR token discriminator, align with PPO (sequence reward), PPO (TLCR token reward), DPO, " +
            "BCO, A-LoL and best-of-n, evaluate every policy on held-out prompts (true reward, KL to the SFT model, equal-KL reward, fluency, distinct-1/2, length) and " +
            "write a report (report.md, self-contained report.html, plots) plus TensorBoard logs. About 9 minutes on 2 CPU cores; --quick: about 1.");
        var outDir = cmd.Declare("--out", "runs/demo", "Output folder: runs/ (one folder per stage, TensorBoard logs inside) and report/.", alias: "-o");
        var quick = cmd.Declare("--quick", false, "A 1-minute version with a tiny model and a few steps per stage (a smoke test of the whole pipeline).");
        var seed = cmd.Declare("--seed", 42, "Seed of every stage (initialisation, data order, sampling) and of the evaluation: same seed, same table.");
        var threads = cmd.Declare("--threads", 0, "Torch CPU threads for every stage (0 = one per core). Part of the determinism contract.", check: v => v >= 0 ? null : "must be ≥ 0");
        var seeds = cmd.Declare("--seeds", 1, "Repeat the whole pipeline with seeds --seed, --seed + 1, …: the report gives each method's mean ± 95 % interval over them (runs in runs/seed-S/).",
            check: v => v is >= 1 and <= 20 ? null : "must be between 1 and 20");
        var task = cmd.Declare("--task", "builtin", "builtin (the generated review corpus, no downloads) or imdb (real IMDB reviews: continue a review prefix positively, " +
            "judged by a held-out classifier; docs/IMDB.md).", check: v => v is "builtin" or "imdb" ? null : "must be builtin or imdb");
        var imdbData = cmd.Declare("--imdb-data", "../shared/data/imdb/imdb-9k.jsonl", "--task imdb: labelled reviews, JSONL with 'text' and 'label' 0|1.");
        var afinn = cmd.Declare("--afinn", "../shared/data/afinn/AFINN-en-165.txt", "--task imdb: the AFINN lexicon (word<TAB>score).");
        var onlySeed = cmd.Declare<string?>("--only-seed", null, "--task imdb with --seeds: run only this seed's stages (after the shared data and tokenizers), " +
            "or 'shared' for only the shared stages (data, tokenizers, judge); no report. To run the seeds in parallel processes on one --out (shared stages " +
            "are locked, so start them all at once); a last run without it skips every finished stage and writes the report.");
        cmd.SetRecipeAction(async (r, ct) =>
        {
            if (r.Get(task) == "imdb")
            {
                string o = r.Get(outDir) == "runs/demo" ? "runs/demo-imdb" : r.Get(outDir);
                string rep = $"finealign demo --task imdb --out {ReportCommand.Quote(o)} --seed {r.Get(seed)}" + (r.Get(seeds) > 1 ? $" --seeds {r.Get(seeds)}" : "") +
                             (r.Get(quick) ? " --quick" : "") + (r.Get(threads) > 0 ? $" --threads {r.Get(threads)}" : "") +
                             $" --imdb-data {ReportCommand.Quote(r.Get(imdbData))} --afinn {ReportCommand.Quote(r.Get(afinn))}";
                return await ImdbDemo.RunAsync(r, r.Get(quick), o, r.Get(seed), r.Get(threads), r.Get(seeds), r.Get(imdbData), r.Get(afinn), rep, ct, r.Get(onlySeed));
            }
            var budget = r.Get(quick) ? Budget.Quick : Budget.Full;
            string root = r.Get(outDir), reportDir = Path.Combine(root, "report");
            int s0 = r.Get(seed), t = r.Get(threads), n = r.Get(seeds);
            string reproduce = $"finealign demo --out {ReportCommand.Quote(root)} --seed {s0}" + (n > 1 ? $" --seeds {n}" : "") +
                               (r.Get(quick) ? " --quick" : "") + (t > 0 ? $" --threads {t}" : "");
            var clock = Stopwatch.StartNew();
            var evaluations = new List<RunEvaluation>();
            var allRuns = new List<string>();
            var evaluateTimes = new List<(string, double)>();
            for (int k = 0; k < n; k++)
            {
                int s = s0 + k;
                // One seed: runs/<stage> (as before); several: runs/seed-S/<stage>, one report over all of them.
                string runs = n == 1 ? Path.Combine(root, "runs") : Path.Combine(root, "runs", $"seed-{s}");
                Directory.CreateDirectory(runs);
                var stages = Plan(budget, runs, s, t);
                r.Out.WriteLine($"demo: {stages.Count} stages into {runs} ({(r.Get(quick) ? "quick" : "full")} budget, seed {s}" +
                                (n > 1 ? $", {k + 1} of {n} seeds" : "") + $"); reproduce with: {reproduce}");
                var (evals, evaluateSeconds) = await RunSeed(r, budget, stages, runs, s, n - k - 1, clock, ct);
                evaluations.AddRange(evals);
                allRuns.AddRange(Stages(stages).Select(x => Path.Combine(runs, x)));
                evaluateTimes.Add((n == 1 ? "evaluate" : $"evaluate (seed {s})", Math.Round(evaluateSeconds, 1)));
            }

            var fromRuns = ReportCommand.Context("FineAlign demo: alignment methods side by side on the built-in review corpus", reproduce, allRuns);
            var context = fromRuns with
            {
                TensorBoardDir = Path.Combine(root, "runs"),
                Timings = [.. fromRuns.Timings, .. evaluateTimes],
                Notes =
                [
                    $"Base: `{budget.Preset}` Llama preset with a {budget.VocabSize}-token byte-level BPE tokenizer trained on the corpus, pretrained " +
                    $"{budget.PretrainSteps} steps and SFT {budget.SftSteps} steps on the corpus; every method starts from the SFT model, which is also its KL reference.",
                    "Learned signals: `rm` = sequence reward model (Bradley–Terry on the corpus's preference pairs), `tlcr` = TLCR token discriminator " +
                    "(labels from the generator's revisions). DPO and BCO read the same pairs (BCO as unpaired thumbs-up/down); A-LoL and best-of-n use `rm`.",
                    n == 1 ? "One seed: differences within about two standard errors are noise."
                           : $"{n} seeds (each a full pipeline, pretraining included): ± is the 95 % interval of the mean over seeds (Student's t).",
                ],
            };
            return Finish(r, evaluations, reportDir, context, clock, Path.Combine(root, "runs"));
        });
        return cmd;
    }

    /// <summary>Runs (or skips, when done) the stages of one seed; returns its evaluations and the evaluate stage's seconds.</summary>
    private static async Task<(List<RunEvaluation>, double)> RunSeed(Recipe r, Budget budget, List<Stage> stages, string runs, int s,
        int seedsAfter, Stopwatch clock, CancellationToken ct)
    {
        double expectedDone = 0, actualDone = 0;
        double expectedAll = stages.Sum(x => x.ExpectedSeconds), evaluateSeconds = 0;
        var policyRuns = PolicyRuns.Select(n => Path.Combine(runs, n)).ToList();
        List<RunEvaluation> evaluations = [];
        var settings = new EvalSettings(budget.EvalPrompts, budget.EvalSamples, budget.MaxNewTokens, s + 7777L, budget.CorpusSize, 1234,
            Path.Combine(runs, "sft", "model"));
        var cache = new StageCache();
        for (int i = 0; i < stages.Count; i++)
        {
            ct.ThrowIfCancellationRequested();
            var st = stages[i];
            // ETA: the remaining planned time (this seed's and the seeds after it), scaled by how fast this machine has been so far.
            double speed = expectedDone > 0 ? actualDone / expectedDone : 1;
            double left = (expectedAll - expectedDone + seedsAfter * expectedAll) * speed;
            Header(r.Out, $"demo {i + 1}/{stages.Count}: {st.Name}", st.What,
                   $"elapsed {Clock(clock.Elapsed.TotalSeconds)}, about {Clock(left)} left");
            var stageClock = Stopwatch.StartNew();
            string dir = Path.Combine(runs, st.Name);
            string command = st.Args.Length > 0 ? "finealign " + string.Join(' ', st.Args.Select(ReportCommand.Quote)) : BonCommandLine(budget, runs, s);
            if (cache.AlreadyDone(r, st, dir, command))
            {
                expectedDone += st.ExpectedSeconds; actualDone += st.ExpectedSeconds * speed;
                continue;
            }
            if (Directory.Exists(dir) && st.Name != "evaluate") Directory.Delete(dir, recursive: true);
            if (st.Args.Length > 0) await RunStage(r, st, command, ct);
            else if (st.Name == "bon") BestOfN(r, budget, runs, settings);
            else if (st.Name == "evaluate")
            {
                // The same evaluation as `finealign report --base`: cached per run, best-of-n evaluated by its stage.
                evaluations = ReportCommand.EvaluateRuns(r, policyRuns, settings.BaseModel, settings, assumeBuiltin: true, ct);
                foreach (var e in evaluations)
                    r.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"evaluate: {e.Name}: true reward {e.Final.Reward:F3} ± {e.Final.RewardSe:F3}, KL {e.Final.Kl:F2}, corpus words {e.Final.CorpusWordShare:P1}, " +
                        $"well-formed {e.Final.WellFormedShare:P1}, base log-prob/token {e.Final.BaseLogProb:F2}, distinct-2 {e.Final.Distinct2:F3}"));
                evaluateSeconds = stageClock.Elapsed.TotalSeconds;
            }
            if (st.Name != "evaluate")
                cache.Record(dir, new RunInfo(st.Method, st.Signal, command, Math.Round(stageClock.Elapsed.TotalSeconds, 1), RunInfo.BuiltinData, s));
            expectedDone += st.ExpectedSeconds;
            actualDone += stageClock.Elapsed.TotalSeconds;
        }
        return (evaluations, evaluateSeconds);
    }

    /// <summary>The runs that appear in the table, in order (the SFT model first: the base row).</summary>
    internal static readonly string[] PolicyRuns = ["sft", "ppo-seq", "ppo-tlcr", "dpo", "bco", "alol", "bon"];

    private static IEnumerable<string> Stages(IEnumerable<Stage> stages) => stages.Where(x => x.Name != "evaluate").Select(x => x.Name);

    internal static List<Stage> Plan(Budget b, string runs, int seed, int threads)
    {
        string R(string name) => Path.Combine(runs, name);
        string Inv(double v) => v.ToString(CultureInfo.InvariantCulture);
        string[] Common(string name) => ["--out", R(name), "--seed", Inv(seed), "--threads", Inv(threads)];
        string[] Train(int steps, int batch, double lr) =>
            ["--max-steps", Inv(steps), "--batch-size", Inv(batch), "--learning-rate", Inv(lr), "--logging-steps", Inv(Math.Max(1, steps / 20))];
        string[] Curve(int steps) => ["--save-steps", Inv(Math.Max(1, steps / b.CurvePoints)), "--save-total-limit", Inv(b.CurvePoints + 1)];
        string sft = Path.Combine(R("sft"), "model"), rm = Path.Combine(R("rm"), "model"), tlcr = Path.Combine(R("tlcr"), "model");
        string corpus = Inv(b.CorpusSize);
        string[] Ppo(string name, string reward) =>
        [
            "ppo", .. Common(name), "--policy", sft, "--reward", reward, "--steps", Inv(b.PpoBatches), "--batch-size", Inv(b.PpoBatchSize),
            "--mini-batch-size", Inv(b.PpoMiniBatch), "--ppo-epochs", "2", "--max-new-tokens", Inv(b.MaxNewTokens), "--learning-rate", "3e-05",
            "--kl-coef", "0.2", "--corpus-size", corpus, "--save-steps", Inv(Math.Max(1, b.PpoBatches / b.CurvePoints)), "--save-total-limit", Inv(b.CurvePoints + 1),
        ];
        // Expected seconds: measured on the quiet 2-core reference machine (full budget, November 2026); they only drive the ETA.
        bool q = b == Budget.Quick;
        // Pretraining evaluates its held-out blocks only at the end (--eval-steps 0): the default every-100-steps loss (322 blocks, forward only)
        // costs a few seconds each and changes nothing in training (no RNG, no grad), so the budget goes to steps.
        return
        [
            new("tokenizer", $"byte-level BPE tokenizer ({b.VocabSize} tokens) trained on the corpus text", ["tokenizer", "train", "--out", R("tokenizer"),
                "--vocab-size", Inv(b.VocabSize), "--corpus-size", Inv(Math.Max(2 * b.CorpusSize, 2000))], 1),
            new("pretrain", $"{b.Preset} model from scratch on raw review text", ["pretrain", .. Common("pretrain"), "--init", b.Preset, "--context-length", Inv(b.Context),
                "--tokenizer", R("tokenizer"), .. Train(b.PretrainSteps, b.BatchSize, b.PretrainLr), "--corpus-size", Inv(Math.Max(5 * b.CorpusSize, 2000)),
                "--samples", "0", "--save-steps", "0", "--eval-steps", "0"], q ? 5 : 330),
            new("sft", "supervised fine-tuning: prompt → review", ["sft", .. Common("sft"), "--model", Path.Combine(R("pretrain"), "model"),
                .. Train(b.SftSteps, b.BatchSize, 1e-3), "--corpus-size", Inv(Math.Max(b.CorpusSize, 2000)), "--samples", "2", "--save-steps", "0"], q ? 4 : 101, "SFT", "—"),
            new("rm", "sequence reward model on preference pairs", ["rm", .. Common("rm"), "--model", sft, .. Train(b.RmSteps, b.BatchSize, 5e-4),
                "--corpus-size", corpus, "--save-steps", "0"], q ? 3 : 68),
            new("tlcr-label", "token labels from the generator's revision pairs", ["tlcr-label", "--tokenizer", sft, "--out", Path.Combine(R("tlcr-label"), "train.jsonl"),
                "--eval-out", Path.Combine(R("tlcr-label"), "eval.jsonl"), "--corpus-size", corpus], q ? 1 : 1),
            new("tlcr", "TLCR token discriminator", ["tlcr-train", .. Common("tlcr"), "--model", sft, "--data", Path.Combine(R("tlcr-label"), "train.jsonl"),
                "--eval-data", Path.Combine(R("tlcr-label"), "eval.jsonl"), .. Train(b.TlcrSteps, Math.Max(4, b.BatchSize / 2), 5e-4), "--neutral-weight", "0.3",
                "--save-steps", "0"], q ? 3 : 20),
            new("ppo-seq", "PPO, sequence reward (reward model score on the last token)", Ppo("ppo-seq", "rm:" + rm), q ? 6 : 25, "PPO", "rm (sequence)"),
            new("ppo-tlcr", "PPO, TLCR token rewards", Ppo("ppo-tlcr", "tlcr:" + tlcr), q ? 6 : 28, "PPO", "tlcr (token)"),
            // DPO reads a chosen and a rejected sequence per pair: half the pairs per step sees as many sequences as BCO and A-LoL.
            new("dpo", "DPO on the preference pairs", ["dpo", .. Common("dpo"), "--model", sft, .. Train(b.OfflineSteps, b.BatchSize / 2, 5e-5), "--beta", "0.1",
                "--corpus-size", corpus, .. Curve(b.OfflineSteps)], q ? 4 : 38, "DPO", "pairs"),
            new("bco", "BCO on the pairs read as thumbs-up/down", ["bco", .. Common("bco"), "--model", sft, .. Train(b.OfflineSteps, b.BatchSize, 5e-5), "--beta", "0.1",
                "--corpus-size", corpus, .. Curve(b.OfflineSteps)], q ? 4 : 31, "BCO", "binary feedback"),
            // A-LoL scores its whole offline set with the reward model first: a quarter of the corpus is enough for its steps.
            new("alol", "A-LoL offline policy gradient on corpus reviews scored by the reward model", ["alol", .. Common("alol"), "--model", sft,
                .. Train(b.OfflineSteps, b.BatchSize, 5e-5), "--reward", "rm:" + rm, "--corpus-size", Inv(Math.Max(400, b.CorpusSize / 4)),
                "--eval-prompts", "0", .. Curve(b.OfflineSteps), ..QuickAlolValue(q)],
                q ? 4 : 38, "A-LoL", "rm (sequence)"),
            new("bon", $"best-of-n sampling from the SFT model with the reward model (n = {string.Join(", ", b.BonN)})", [], q ? 2 : 5,
                $"best-of-{b.BonN.Max()}", "rm (sequence)"),
            new("evaluate", "held-out evaluation of every policy and checkpoint", [], q ? 6 : 25),
        ];
    }

    // The quick budget's 10-step reward model is nearly constant and its tiny SFT's greedy responses are not reviews, so the
    // paper's value estimate (fit on those responses) sits above or below every corpus review at once: with seed 43 no example
    // had A > 0 and A-LoL had nothing to train on. The smoke test fits V on the offline rewards themselves (linear estimator).
    private static string[] QuickAlolValue(bool quick) => quick ? ["--value-estimator", "linear"] : [];

    private static string BonCommandLine(Budget b, string runs, int seed) =>
        $"finealign bon --model {ReportCommand.Quote(Path.Combine(runs, "sft", "model"))} --reward rm:{ReportCommand.Quote(Path.Combine(runs, "rm", "model"))} " +
        $"--n {b.BonN.Max()} --max-new-tokens {b.MaxNewTokens} --corpus-size {b.CorpusSize} --num-prompts {b.EvalPrompts} --seed {seed + 7777}";

    private static void BestOfN(Recipe r, Budget b, string runs, EvalSettings settings)
    {
        string sft = Path.Combine(runs, "sft", "model");
        var tokenizer = TokenizerLoader.Load(sft);
        using var model = ModelIO.Load(sft);
        var reward = RewardSpecs.Build(["rm:" + Path.Combine(runs, "rm", "model")], tokenizer);
        var eval = RunEvaluator.BestOfNCurve("bon", model, tokenizer, reward, settings, EvalReward.CorpusTruth(), b.BonN) with
        {
            Signal = "rm (sequence)", TrainedOnBuiltinCorpus = true,
        };
        Directory.CreateDirectory(Path.Combine(runs, "bon"));
        eval.Save(Path.Combine(runs, "bon"));
        r.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"bon: true reward {string.Join(", ", eval.Curve.Select(p => $"n={p.X:F0}: {p.Reward:F3}"))}"));
    }

    /// <summary>
    /// Which stages of one pipeline can be skipped (both demo tasks). A stage is skipped when its folder records the same
    /// work (<see cref="SameWork"/>); once a stage has rerun, every later stage of the pipeline reruns too, since it was made
    /// from the old output. Start a pipeline's later part with <c>new StageCache(earlier.Rebuilt)</c>.
    /// </summary>
    internal sealed class StageCache(bool rebuilt = false)
    {
        /// <summary>Whether a stage of this pipeline (or of the part it continues) has rerun.</summary>
        public bool Rebuilt { get; private set; } = rebuilt;

        public bool AlreadyDone(Recipe r, Stage st, string dir, string command)
        {
            if (Rebuilt || RunEvaluation.ReadInfo(dir) is not { Command.Length: > 0 } done || !SameWork(done.Command, command)) return false;
            r.Out.WriteLine($"demo: {st.Name} already done in {dir} (same command); skipped");
            return true;
        }

        /// <summary>Records a finished stage in its folder (what a later run compares against).</summary>
        public void Record(string dir, RunInfo info)
        {
            RunEvaluation.WriteInfo(dir, info);
            Rebuilt = true;
        }
    }

    /// <summary>
    /// Two stage commands do the same work when they differ at most in run-only flags (today `--threads`): a stage
    /// finished with another thread count is kept, not deleted and retrained (that once cost a 3-seed IMDB table).
    /// Another thread count can round a GEMM's last bit differently, so the kept stage is equally valid, not bit-identical.
    /// </summary>
    public static bool SameWork(string a, string b) => WithoutRunOnlyFlags(a) == WithoutRunOnlyFlags(b);

    private static string WithoutRunOnlyFlags(string command) =>
        System.Text.RegularExpressions.Regex.Replace(command, @" --threads(?: |=)\S+", "");

    /// <summary>Runs a stage's own finealign command in-process; Ctrl+C stays a cancellation, another failure names the command.</summary>
    internal static async Task RunStage(Recipe r, Stage st, string command, CancellationToken ct)
    {
        int code = await CliApp.RunAsync(st.Args, r.Out, r.Error, ct);
        if (code == 130) throw new OperationCanceledException();
        if (code != 0) throw new FineAlignException($"demo stage '{st.Name}' failed (exit {code}); run it alone to see why: {command}");
    }

    /// <summary>Writes the report, prints its table and where everything is (both demo tasks end here).</summary>
    internal static int Finish(Recipe r, List<RunEvaluation> evaluations, string reportDir, ReportContext context, Stopwatch clock, string tensorBoardDir)
    {
        string md = ComparisonReport.Write(evaluations, reportDir, context);
        r.Out.WriteLine();
        r.Out.Write(ComparisonReport.MarkdownTable(evaluations));
        r.Out.WriteLine($"demo: done in {Clock(clock.Elapsed.TotalSeconds)}. Report: {md} and {Path.Combine(reportDir, ComparisonReport.HtmlFile)}; " +
                        $"TensorBoard: tensorboard --logdir {tensorBoardDir}");
        return 0;
    }

    // Stage title and ETA on one short line (a rule on a terminal), what the stage does below it.
    internal static void Header(TextWriter output, string title, string what, string eta)
    {
        if (CliProgress.IsInteractive(output))
        {
            AnsiConsole.Write(new Rule($"[bold]{Markup.Escape(title)}[/] [grey]({Markup.Escape(eta)})[/]") { Justification = Justify.Left });
            AnsiConsole.MarkupLine($"[grey]{Markup.Escape(what)}[/]");
        }
        else
            output.WriteLine($"== {title} ({eta}): {what}");
    }

    internal static string Clock(double seconds)
    {
        var t = TimeSpan.FromSeconds(Math.Max(0, seconds));
        return $"{(int)t.TotalMinutes:D2}:{t.Seconds:D2}";
    }
}
