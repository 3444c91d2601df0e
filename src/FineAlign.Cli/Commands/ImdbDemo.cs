using System.Diagnostics;
using System.Globalization;
using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Text;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign demo --task imdb</c>: the IMDB positive-continuation task (TRL's gpt2-imdb PPO example, at our scale) as
/// a sequence of ordinary <c>finealign</c> commands on files the first stage writes (docs/IMDB.md):
/// imdb-prepare → tokenizer → pretrain (the base) → rm --objective classification (the reward) → a held-out judge
/// (own tokenizer, own pretraining, own classifier, all on the disjoint judge part) → tlcr-label/tlcr-train (AFINN token
/// labels) → ppo with the classifier, the TLCR and the discrete reward → bon samples ranked by the classifier → dpo on
/// its pairs, bco on its thumbs → alol on the human continuations scored by the classifier → best-of-n, then every
/// policy evaluated on held-out test prefixes with the judge, the AFINN score, real words, KL and fluency.
/// The data, tokenizer and judge stages are shared by all seeds (the test set and judge stay fixed); the rest run per seed.
/// </summary>
internal static class ImdbDemo
{
    /// <summary>
    /// Sizes of one run. <see cref="Full"/>: 13:22 measured from scratch on 2 quiet cores (--threads 2, docs/IMDB.md), with the 8,192-token
    /// base (real words 0.74 → 0.86 over the 2,048-token one); the classifiers keep 2,048 tokens. <see cref="Quick"/>: a CI smoke test.
    /// </summary>
    internal sealed record Budget(string Preset, int Context, int VocabSize, int ClassifierVocabSize, int MaxReviews, int PretrainSteps, double PretrainLr, int JudgePretrainSteps,
        int ClassifierSteps, int TlcrSteps, int PpoBatches, int PpoBatchSize, int PpoMiniBatch, int OfflineSteps, int BatchSize, int MaxNewTokens,
        int ContinuationWords, int SamplePrompts, int SampleN, int EvalPrompts, int[] BonN, int CurvePoints)
    {
        public static readonly Budget Full = new("small", 128, 8192, 2048, 0, 500, 2e-3, 200, 600, 80, 30, 16, 8, 48, 16, 24, 32, 384, 4, 128, [1, 2, 4, 8], 4);
        // Quick: the classifiers' tokenizer differs from the base's, as in Full, so CI runs the --retokenize path of ppo/bon/alol.
        public static readonly Budget Quick = new("tiny", 64, 300, 280, 400, 12, 2e-3, 6, 6, 4, 2, 4, 4, 4, 8, 8, 12, 8, 2, 8, [1, 2], 2);
    }

    // Measured (docs/IMDB.md): 150 steps at 5e-4 left the classifier at chance (50.1 %); 600 steps (~2 epochs) at 1e-3 reached
    // 71.3 % test accuracy even on a fresh trunk. Several windows per review instead scored 64.7 % at the same step count.
    private const double ClassifierLr = 1e-3;

    /// <summary>The runs in the table, in order (the pretrained base first: the row every Δ is measured against).</summary>
    internal static readonly string[] PolicyRuns = ["base", "ppo-seq", "ppo-tlcr", "ppo-discrete", "dpo", "bco", "alol", "bon"];

    internal const string DataTag = "imdb";

    public static async Task<int> RunAsync(Recipe r, bool quick, string root, int s0, int threads, int nSeeds, string dataPath, string afinnPath,
        string reproduce, CancellationToken ct, string? only = null)
    {
        // --only-seed: one part of a multi-seed run, for parallel processes on one folder (null = everything, -1 = the shared stages only).
        int? onlySeed = only switch
        {
            null => null,
            "shared" when nSeeds >= 2 => -1,
            _ when int.TryParse(only, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && nSeeds >= 2 && v >= s0 && v < s0 + nSeeds => v,
            _ => throw new FineAlignException($"--only-seed {only}: must be 'shared' or one of the seeds of --seed {s0} --seeds {nSeeds} " +
                                              $"(seeds {s0}–{s0 + nSeeds - 1}, with --seeds of at least 2)"),
        };
        if (!File.Exists(dataPath))
            throw new FineAlignException($"{dataPath}: IMDB review file not found (demo --task imdb reads ../shared/data/imdb/imdb-9k.jsonl by default; pass --imdb-data FILE, " +
                                         "JSONL with 'text' and 'label' 0|1)");
        if (!File.Exists(afinnPath))
            throw new FineAlignException($"{afinnPath}: AFINN lexicon not found (default ../shared/data/afinn/AFINN-en-165.txt; pass --afinn FILE, word<TAB>score lines)");
        var budget = quick ? Budget.Quick : Budget.Full;
        string shared = Path.Combine(root, "runs"), reportDir = Path.Combine(root, "report");
        var clock = Stopwatch.StartNew();
        var evaluations = new List<RunEvaluation>();
        var allRuns = new List<string>();
        var evaluateTimes = new List<(string, double)>();
        var sharedStages = SharedPlan(budget, shared, s0, threads, dataPath, afinnPath);
        // Data and tokenizers first (every seed needs them); the judge only when the policies are evaluated. Both run under a lock
        // file, so several processes (--only-seed) can share one output folder: the first trains them, the others find them done.
        var prep = sharedStages.Where(x => !x.Name.StartsWith("judge", StringComparison.Ordinal)).ToList();
        var judge = sharedStages.Except(prep).ToList();
        r.Out.WriteLine($"demo --task imdb: {sharedStages.Count} shared stages (data, tokenizers, held-out judge) into {shared} ({(quick ? "quick" : "full")} budget, split seed {s0}); " +
                        $"reproduce with: {reproduce}");
        // A stage that reruns makes every stage made from its output rerun too, also across the lists below (in this
        // process: the data and tokenizers → each seed's stages → that seed's best-of-n).
        var prepCache = new DemoCommand.StageCache();
        using (SharedStagesLock(r, shared, "data and tokenizers", ct)) await RunStages(r, budget, prep, shared, s0, null, clock, ct, prepCache);
        allRuns.AddRange(sharedStages.Select(x => Path.Combine(shared, x.Name)));
        var seeds = new List<(int Seed, string Runs, List<DemoCommand.Stage> Stages, EvalSettings Settings, DemoCommand.StageCache Cache)>();
        for (int k = 0; k < nSeeds; k++)
        {
            int s = s0 + k;
            if (onlySeed is int o && s != o) continue;
            string runs = nSeeds == 1 ? shared : Path.Combine(shared, $"seed-{s}");
            Directory.CreateDirectory(runs);
            var stages = SeedPlan(budget, shared, runs, s, threads, afinnPath);
            r.Out.WriteLine($"demo --task imdb: {stages.Count} stages into {runs} (seed {s}" + (nSeeds > 1 ? $", {k + 1} of {nSeeds} seeds" : "") + ")");
            var settings = Settings(budget, shared, runs, s, nSeeds, afinnPath);
            var seedCache = new DemoCommand.StageCache(prepCache.Rebuilt);
            await RunStages(r, budget, stages.Where(x => !NeedsJudge(x)).ToList(), runs, s, settings, clock, ct, seedCache);
            seeds.Add((s, runs, stages, settings, seedCache));
            allRuns.AddRange(stages.Where(x => x.Name != "evaluate").Select(x => Path.Combine(runs, x.Name)));
        }
        using (SharedStagesLock(r, shared, "judge", ct)) await RunStages(r, budget, judge, shared, s0, null, clock, ct, new DemoCommand.StageCache());
        foreach (var (s, runs, stages, settings, seedCache) in seeds)
        {
            var (evals, seconds) = await RunStages(r, budget, stages.Where(NeedsJudge).ToList(), runs, s, settings, clock, ct, seedCache);
            evaluations.AddRange(evals);
            evaluateTimes.Add((nSeeds == 1 ? "evaluate" : $"evaluate (seed {s})", Math.Round(seconds, 1)));
        }

        if (onlySeed is int done)
        {
            r.Out.WriteLine($"demo --task imdb: {(done < 0 ? "shared stages" : $"seed {done}")} done in {DemoCommand.Clock(clock.Elapsed.TotalSeconds)}; once every seed is done, rerun without --only-seed " +
                            "to write the report (finished stages are skipped)");
            return 0;
        }
        var fromRuns = ReportCommand.Context("FineAlign demo: IMDB positive continuation (real reviews, held-out judge)", reproduce, allRuns);
        var judgeAcc = ReadAccuracy(Path.Combine(shared, "judge"));
        var classifierAcc = ReadAccuracy(Path.Combine(nSeeds == 1 ? shared : Path.Combine(shared, $"seed-{s0}"), "classifier"));
        var context = fromRuns with
        {
            TensorBoardDir = shared,
            Timings = [.. fromRuns.Timings, .. evaluateTimes],
            Notes =
            [
                $"Data: `{dataPath}` split by review (seed {s0}) into train / validation / test / judge (`{Path.Combine(shared, "data", "split.json")}`); " +
                $"prompts are the first {3}–{8} words of a review; every policy continues held-out **test** prefixes for at most {budget.MaxNewTokens} tokens.",
                $"Base: `{budget.Preset}` Llama preset, {budget.VocabSize}-token BPE tokenizer and {budget.PretrainSteps} pretraining steps on the training reviews' text only; " +
                "every method starts from it, and it is the KL reference.",
                $"Reward: `classifier` = `rm --objective classification` on a fresh `{budget.Preset}` trunk with its own {budget.ClassifierVocabSize}-token tokenizer and the training labels " +
                $"(held-out test accuracy {Pct(classifierAcc)}); " +
                "`tlcr` = TLCR discriminator on AFINN token labels of the training reviews (our reading: lexicon words whose valence agrees with the review's label); " +
                "`discrete` = the same discriminator thresholded to ±1. DPO reads best-vs-worst of the base's samples ranked by the classifier, BCO their thumbs " +
                "(classifier logit > 0), A-LoL the human continuations scored by the classifier, best-of-n ranks by the classifier.",
                $"Judge (the table's reward): a second classifier with its own tokenizer, pretraining and labels, all from the disjoint judge part (test accuracy {Pct(judgeAcc)}); " +
                "no method trains on it. `afinn`: AFINN-165 score (sum of word valences) of the continuation; `real_words`: share of its words that occur in the training reviews.",
                nSeeds == 1 ? "One seed: differences within about two standard errors are noise; the classifier column is the training reward (for reward hacking: compare with the judge)."
                            : $"{nSeeds} seeds (each a full pipeline from pretraining; data, tokenizer and judge shared): ± is the 95 % interval of the mean over seeds (Student's t).",
            ],
        };
        return DemoCommand.Finish(r, evaluations, reportDir, context, clock, shared);
    }

    // Best-of-n is evaluated as it is built (its curve over n is scored by the judge), like the evaluate stage.
    private static bool NeedsJudge(DemoCommand.Stage st) => st.Name is "bon" or "evaluate";

    /// <summary>
    /// An exclusive lock on one group of shared stages of <paramref name="shared"/> (a kernel flock: released when the holder exits,
    /// even when killed), waited for while another process holds it. One lock per group, so the seeds can start training while
    /// another process trains the judge.
    /// </summary>
    internal static FileStream SharedStagesLock(Recipe r, string shared, string group, CancellationToken ct)
    {
        Directory.CreateDirectory(shared);
        string path = Path.Combine(shared, $".{group.Replace(' ', '-')}.lock");
        for (bool told = false; ; told = true)
        {
            try { return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
            catch (IOException)
            {
                if (!told) r.Out.WriteLine($"demo --task imdb: another process is running the shared stages ({group}) in {shared}; waiting for it");
                ct.WaitHandle.WaitOne(2000);  // Ctrl+C / SIGTERM ends the wait
                ct.ThrowIfCancellationRequested();
            }
        }
    }

    private static string Pct(double? v) => v is double x ? (100 * x).ToString("F1", CultureInfo.InvariantCulture) + " %" : "n/a";

    /// <summary>The last held-out accuracy a classifier run logged (eval/accuracy in metrics.jsonl), or null.</summary>
    internal static double? ReadAccuracy(string runDir)
    {
        string path = Path.Combine(runDir, Training.MetricsLogger.JsonlFile);
        if (!File.Exists(path)) return null;
        return Training.MetricsLogger.Read(path).LastOrDefault(e => e.ContainsKey("eval/accuracy")) is { } e ? e["eval/accuracy"] : null;
    }

    internal static EvalSettings Settings(Budget b, string shared, string runs, int seed, int nSeeds, string afinn)
    {
        string judge = Path.Combine(shared, "judge", "model"), data = Path.Combine(shared, "data");
        // The classifier the methods trained on differs per seed: shown only for one seed (settings must match across seeds).
        string metrics = $"afinn=afinn:{afinn}; real_words=known-words:{Path.Combine(data, "train-text.jsonl")}" +
                         (nSeeds == 1 ? $"; classifier=rm:{Path.Combine(runs, "classifier", "model")}" : "");
        // Corpus size and seed as `finealign report` defaults them (unused with a prompts file): its rerun hits the cached evaluations.
        return new EvalSettings(b.EvalPrompts, 1, b.MaxNewTokens, seed + 7777L, 4000, 1234, Path.Combine(runs, "base", "model"))
        {
            Reward = "judge=rm:" + judge, PromptsFile = Path.Combine(data, "prompts-test.jsonl"), Metrics = metrics,
        };
    }

    private static string Inv(double v) => v.ToString(CultureInfo.InvariantCulture);

    /// <summary>Data split, tokenizer and the held-out judge: one set for all seeds.</summary>
    internal static List<DemoCommand.Stage> SharedPlan(Budget b, string runs, int seed, int threads, string dataPath, string afinn)
    {
        string R(string name) => Path.Combine(runs, name);
        string D(string file) => Path.Combine(R("data"), file);
        string[] Common(string name) => ["--out", R(name), "--seed", Inv(seed), "--threads", Inv(threads)];
        bool q = b == Budget.Quick;
        return
        [
            new("data", "split the reviews by review (train / validation / test / judge) and write the task's files",
                ["imdb-prepare", "--data", dataPath, "--afinn", afinn, "--out", R("data"), "--seed", Inv(seed), "--max-reviews", Inv(b.MaxReviews),
                 "--continuation-words", Inv(b.ContinuationWords)], q ? 1 : 5),
            new("tokenizer", $"byte-level BPE tokenizer ({b.VocabSize} tokens) on the training reviews", ["tokenizer", "train", "--data", D("train-text.jsonl"),
                "--vocab-size", Inv(b.VocabSize), "--out", R("tokenizer")], q ? 1 : 120),
            new("classifier-tokenizer", $"the classifiers' smaller BPE tokenizer ({b.ClassifierVocabSize} tokens) on the training reviews", ["tokenizer", "train",
                "--data", D("train-text.jsonl"), "--vocab-size", Inv(b.ClassifierVocabSize), "--out", R("classifier-tokenizer")], q ? 1 : 15),
            new("judge-tokenizer", "the judge's own tokenizer, on the judge reviews only", ["tokenizer", "train", "--data", D("judge-text.jsonl"),
                "--vocab-size", Inv(b.ClassifierVocabSize), "--out", R("judge-tokenizer")], q ? 1 : 12),
            new("judge-base", "the judge's own trunk, pretrained on the judge reviews only", ["pretrain", .. Common("judge-base"), "--init", b.Preset,
                "--context-length", Inv(b.Context), "--tokenizer", R("judge-tokenizer"), "--data", D("judge-text.jsonl"), "--max-steps", Inv(b.JudgePretrainSteps),
                "--batch-size", Inv(b.BatchSize), "--learning-rate", Inv(b.PretrainLr), "--logging-steps", Inv(Math.Max(1, b.JudgePretrainSteps / 20)),
                "--samples", "0", "--save-steps", "0", "--eval-steps", "0"], q ? 2 : 100),
            new("judge", "held-out judge: sentiment classifier on the judge reviews' labels (accuracy on the test reviews)", ["rm", .. Common("judge"),
                "--objective", "classification", "--model", Path.Combine(R("judge-base"), "model"), "--data", D("judge-train.jsonl"), "--eval-data", D("classifier-test.jsonl"),
                "--max-steps", Inv(b.ClassifierSteps), "--batch-size", Inv(b.BatchSize), "--learning-rate", Inv(ClassifierLr), "--logging-steps", Inv(Math.Max(1, b.ClassifierSteps / 10)),
                "--eval-steps", "0", "--save-steps", "0"], q ? 2 : 30),
        ];
    }

    /// <summary>The per-seed stages: base, reward models, the methods, best-of-n and the evaluation.</summary>
    internal static List<DemoCommand.Stage> SeedPlan(Budget b, string shared, string runs, int seed, int threads, string afinn)
    {
        string R(string name) => Path.Combine(runs, name);
        string D(string file) => Path.Combine(shared, "data", file);
        string[] Common(string name) => ["--out", R(name), "--seed", Inv(seed), "--threads", Inv(threads)];
        string[] Train(int steps, int batch, double lr) =>
            ["--max-steps", Inv(steps), "--batch-size", Inv(batch), "--learning-rate", Inv(lr), "--logging-steps", Inv(Math.Max(1, steps / 20))];
        string[] Curve(int steps) => ["--save-steps", Inv(Math.Max(1, steps / b.CurvePoints)), "--save-total-limit", Inv(b.CurvePoints + 1)];
        string model = Path.Combine(R("base"), "model"), rm = Path.Combine(R("classifier"), "model"), tlcr = Path.Combine(R("tlcr"), "model");
        string[] Ppo(string name, string reward) =>
        [
            "ppo", .. Common(name), "--policy", model, "--reward", reward, "--prompts", D("prompts-train.jsonl"), "--steps", Inv(b.PpoBatches),
            "--batch-size", Inv(b.PpoBatchSize), "--mini-batch-size", Inv(b.PpoMiniBatch), "--ppo-epochs", "2", "--max-new-tokens", Inv(b.MaxNewTokens),
            "--learning-rate", "3e-05", "--kl-coef", "0.1", "--save-steps", Inv(Math.Max(1, b.PpoBatches / b.CurvePoints)), "--save-total-limit", Inv(b.CurvePoints + 1),
        ];
        bool q = b == Budget.Quick;
        return
        [
            new("base", $"{b.Preset} model from scratch on the training reviews' text", ["pretrain", .. Common("base"), "--init", b.Preset, "--context-length", Inv(b.Context),
                "--tokenizer", Path.Combine(shared, "tokenizer"), "--data", D("train-text.jsonl"), "--eval-data", D("validation-text.jsonl"),
                .. Train(b.PretrainSteps, b.BatchSize, b.PretrainLr), "--samples", q ? "0" : "4", "--save-steps", "0", "--eval-steps", "0"], q ? 2 : 350, "pretrained base", "—"),
            new("classifier", "sequence reward: sentiment classifier on the training labels (rm --objective classification; accuracy on the test reviews)",
                ["rm", .. Common("classifier"), "--objective", "classification", "--init", b.Preset, "--context-length", Inv(b.Context),
                 "--tokenizer", Path.Combine(shared, "classifier-tokenizer"), "--data", D("classifier-train.jsonl"),
                 "--eval-data", D("classifier-test.jsonl"), .. Train(b.ClassifierSteps, b.BatchSize, ClassifierLr), "--eval-steps", "0", "--save-steps", "0"], q ? 2 : 30),
            new("tlcr-label", "token labels from AFINN words of the training reviews (valence agreeing with the review's label)",
                ["tlcr-label", "--data", D("tlcr-train.jsonl"), "--tokenizer", model, "--out", Path.Combine(R("tlcr-label"), "train.jsonl")], q ? 1 : 10),
            new("tlcr-label-eval", "the same labels for the validation reviews",
                ["tlcr-label", "--data", D("tlcr-validation.jsonl"), "--tokenizer", model, "--out", Path.Combine(R("tlcr-label-eval"), "eval.jsonl")], q ? 1 : 2),
            new("tlcr", "TLCR token discriminator", ["tlcr-train", .. Common("tlcr"), "--model", model, "--data", Path.Combine(R("tlcr-label"), "train.jsonl"),
                "--eval-data", Path.Combine(R("tlcr-label-eval"), "eval.jsonl"), .. Train(b.TlcrSteps, b.BatchSize, 5e-4), "--neutral-weight", "0.3",
                "--save-steps", "0", "--eval-steps", "0"], q ? 2 : 20),
            new("ppo-seq", "PPO, sequence reward (classifier logit on the last token)", [.. Ppo("ppo-seq", "rm:" + rm), "--retokenize"], q ? 3 : 40, "PPO", "classifier (sequence)"),
            new("ppo-tlcr", "PPO, TLCR token rewards", Ppo("ppo-tlcr", "tlcr:" + tlcr), q ? 3 : 40, "PPO", "tlcr (token)"),
            new("ppo-discrete", "PPO, discrete ±1 token rewards from the same discriminator", Ppo("ppo-discrete", "discrete:" + tlcr), q ? 3 : 40, "PPO", "discrete (token)"),
            new("samples", $"{b.SampleN} continuations per training prefix from the base, ranked by the classifier: pairs for DPO, thumbs for BCO",
                ["bon", "--model", model, "--reward", "rm:" + rm, "--retokenize", "--prompts", D("prompts-train.jsonl"), "--num-prompts", Inv(b.SamplePrompts), "--n", Inv(b.SampleN),
                 "--max-new-tokens", Inv(b.MaxNewTokens), "--seed", Inv(seed), "--threads", Inv(threads), "--out", Path.Combine(R("samples"), "best.jsonl"),
                 "--pairs-out", Path.Combine(R("samples"), "pairs.jsonl"), "--feedback-out", Path.Combine(R("samples"), "feedback.jsonl")], q ? 2 : 30),
            // DPO reads a chosen and a rejected sequence per pair: half the pairs per step sees as many sequences as BCO and A-LoL.
            new("dpo", "DPO on the classifier-ranked pairs", ["dpo", .. Common("dpo"), "--model", model, "--data", Path.Combine(R("samples"), "pairs.jsonl"),
                .. Train(b.OfflineSteps, Math.Max(1, b.BatchSize / 2), 5e-5), "--beta", "0.1", .. Curve(b.OfflineSteps)], q ? 2 : 35, "DPO", "classifier pairs"),
            new("bco", "BCO on the classifier's thumbs", ["bco", .. Common("bco"), "--model", model, "--data", Path.Combine(R("samples"), "feedback.jsonl"),
                .. Train(b.OfflineSteps, b.BatchSize, 5e-5), "--beta", "0.1", .. Curve(b.OfflineSteps)], q ? 2 : 30, "BCO", "classifier thumbs"),
            new("alol", "A-LoL on the human continuations of the training reviews, scored by the classifier", ["alol", .. Common("alol"), "--model", model,
                "--data", D("offline-train.jsonl"), "--reward", "rm:" + rm, "--retokenize", .. Train(b.OfflineSteps, b.BatchSize, 5e-5), "--eval-prompts", "0",
                "--max-new-tokens", Inv(b.MaxNewTokens), "--value-prompts", Inv(q ? 4 : 128), "--value-epochs", Inv(q ? 1 : 10), "--value-steps", Inv(q ? 5 : 300), .. Curve(b.OfflineSteps)],
                q ? 3 : 45, "A-LoL", "classifier (sequence)"),
            new("bon", $"best-of-n from the base ranked by the classifier (n = {string.Join(", ", b.BonN)})", [], q ? 2 : 15, $"best-of-{b.BonN.Max()}", "classifier (sequence)"),
            new("evaluate", "every policy and checkpoint on the test prefixes: judge, AFINN, real words, KL, fluency, distinct-n", [], q ? 4 : 90),
        ];
    }

    /// <summary>
    /// Runs (or skips, when <paramref name="cache"/> finds them done) the stages; evaluation needs <paramref name="settings"/>.
    /// One cache per pipeline part: the seed's continues the shared data's, and its best-of-n continues the seed's.
    /// </summary>
    private static async Task<(List<RunEvaluation>, double)> RunStages(Recipe r, Budget b, List<DemoCommand.Stage> stages, string runs, int s,
        EvalSettings? settings, Stopwatch clock, CancellationToken ct, DemoCommand.StageCache cache)
    {
        List<RunEvaluation> evaluations = [];
        double evaluateSeconds = 0;
        for (int i = 0; i < stages.Count; i++)
        {
            ct.ThrowIfCancellationRequested();
            var st = stages[i];
            double left = stages.Skip(i).Sum(x => x.ExpectedSeconds);
            DemoCommand.Header(r.Out, $"imdb {i + 1}/{stages.Count}: {st.Name}", st.What,
                $"elapsed {DemoCommand.Clock(clock.Elapsed.TotalSeconds)}, this part about {DemoCommand.Clock(left)} left on a quiet machine");
            var stageClock = Stopwatch.StartNew();
            string dir = Path.Combine(runs, st.Name);
            string command = st.Args.Length > 0 ? "finealign " + string.Join(' ', st.Args.Select(ReportCommand.Quote))
                : st.Name == "bon" ? BonCommandLine(b, runs, settings!, s) : "";
            if (st.Name != "evaluate" && cache.AlreadyDone(r, st, dir, command)) continue;
            if (Directory.Exists(dir) && st.Name != "evaluate") Directory.Delete(dir, recursive: true);
            if (st.Args.Length > 0) await DemoCommand.RunStage(r, st, command, ct);
            else if (st.Name == "bon") BestOfN(r, b, runs, settings!);
            else if (st.Name == "evaluate")
            {
                var policyRuns = PolicyRuns.Select(n => Path.Combine(runs, n)).ToList();
                evaluations = ReportCommand.EvaluateRuns(r, policyRuns, settings!.BaseModel, settings, assumeBuiltin: false, ct);
                var inv = CultureInfo.InvariantCulture;
                foreach (var e in evaluations)
                {
                    string metrics = string.Join(", ", (e.Final.Metrics ?? []).Select(kv => kv.Key + " " + kv.Value.ToString("F3", inv)));
                    r.Out.WriteLine(string.Create(inv,
                        $"evaluate: {e.Name}: judge {e.Final.Reward:F3} ± {e.Final.RewardSe:F3}, KL {e.Final.Kl:F2}, {metrics}, " +
                        $"base log-prob/token {e.Final.BaseLogProb:F2}, distinct-2 {e.Final.Distinct2:F3}"));
                }
                evaluateSeconds = stageClock.Elapsed.TotalSeconds;
            }
            if (st.Name != "evaluate")
                cache.Record(dir, new RunInfo(st.Method, st.Signal, command, Math.Round(stageClock.Elapsed.TotalSeconds, 1), DataTag, s));
        }
        return (evaluations, evaluateSeconds);
    }

    private static string BonCommandLine(Budget b, string runs, EvalSettings settings, int seed) =>
        $"finealign bon --model {ReportCommand.Quote(settings.BaseModel)} --reward rm:{ReportCommand.Quote(Path.Combine(runs, "classifier", "model"))} --retokenize " +
        $"--n {b.BonN.Max()} --max-new-tokens {b.MaxNewTokens} --prompts {ReportCommand.Quote(settings.PromptsFile!)} --num-prompts {b.EvalPrompts} --seed {seed + 7777}";

    private static void BestOfN(Recipe r, Budget b, string runs, EvalSettings settings)
    {
        var tokenizer = TokenizerLoader.Load(settings.BaseModel);
        using var model = ModelIO.Load(settings.BaseModel);
        var ranking = RewardSpecs.Build(["rm:" + Path.Combine(runs, "classifier", "model")], tokenizer, retokenize: true);
        var reward = EvalReward.Build(settings.Reward, tokenizer, w => r.Error.WriteLine("warning: " + w));
        var eval = RunEvaluator.BestOfNCurve("bon", model, tokenizer, ranking, settings, reward, b.BonN) with { Signal = "classifier (sequence)" };
        Directory.CreateDirectory(Path.Combine(runs, "bon"));
        eval.Save(Path.Combine(runs, "bon"));
        r.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"bon: judge {string.Join(", ", eval.Curve.Select(p => $"n={p.X:F0}: {p.Reward:F3}"))}"));
    }
}
