using System.CommandLine;
using System.Globalization;
using FineAlign.Data;
using FineAlign.Data.Corpus;
using FineAlign.Models;
using FineAlign.Text;
using FineAlign.Trainers;
using FineAlign.Training;

namespace FineAlign.Cli.Commands;

/// <summary>
/// Data options shared by rm, dpo, kto, bco, eval-rm and eval-pref: preference/feedback files (TRL layouts) or the
/// built-in review pairs (the revision toward positive is chosen), and the length limits.
/// </summary>
internal sealed class PreferenceFlags
{
    public required Option<string?> Data { get; init; }
    public Option<string?>? EvalData { get; init; }
    public required Option<int?> MaxLength { get; init; }
    public required Option<int?> MaxPromptLength { get; init; }
    public required Option<string?> ChatTemplate { get; init; }
    public required Option<int> CorpusSize { get; init; }
    public required Option<int> CorpusSeed { get; init; }
    public required Option<int> HoldoutLast { get; init; }

    public static PreferenceFlags Declare(RecipeCommand cmd, bool feedback, bool evalData = true)
    {
        string what = feedback
            ? "JSONL of prompt + completion + label (true = thumbs-up), conversational or pre-tokenised (prompt_input_ids, completion_input_ids); " +
              "a paired preference file is also accepted (chosen = thumbs-up, rejected = thumbs-down)"
            : "JSONL of preference pairs: prompt + chosen + rejected (strings or message lists), chosen + rejected transcripts with an implicit " +
              "prompt (Anthropic HH-RLHF), or pre-tokenised prompt_input_ids + chosen_input_ids + rejected_input_ids; optional margin field";
        return new PreferenceFlags
        {
            Data = cmd.Declare<string?>("--data", null, $"Training data: {what}. Omitted: the built-in review pairs."),
            EvalData = evalData ? cmd.Declare<string?>("--eval-data", null, "Held-out data in the same layout (built-in corpus: its held-out prompts).") : null,
            MaxLength = cmd.Declare<int?>("--max-length", null, "Maximum prompt + completion tokens (default: the model's context); longer completions are cut at the end.",
                check: v => v is null or >= 2 ? null : "must be at least 2"),
            MaxPromptLength = cmd.Declare<int?>("--max-prompt-length", null, "Keep only the last N prompt tokens (default: no limit; pairs whose prompt leaves no " +
                                                                             "completion token are skipped and counted).", check: v => v is null or >= 1 ? null : "must be at least 1"),
            ChatTemplate = cmd.Declare<string?>("--chat-template", null, "Chat format for message data: chatml, llama2 or zephyr (default: from tokenizer_config.json)."),
            CorpusSize = cmd.Declare("--corpus-size", 4000, "Reviews generated for the built-in preference pairs.", check: v => v >= 10 ? null : "must be at least 10"),
            CorpusSeed = cmd.Declare("--corpus-seed", 1234, "Seed of the built-in corpus."),
            HoldoutLast = cmd.Declare("--holdout-last", 0, evalData
                ? "Hold out the last N lines of --data as the eval set (when --eval-data is not given); 0 = none."
                : "Evaluate only the last N lines of --data (the part a training run held out with the same value); 0 = all.",
                check: v => v >= 0 ? null : "must be ≥ 0"),
        };
    }

    public PreferenceEncoding Encoding(Recipe r, int context)
    {
        int maxLen = r.Get(MaxLength) ?? context;
        if (maxLen > context) throw new FineAlignException($"--max-length {maxLen} exceeds the model's context of {context} tokens.");
        return new PreferenceEncoding { MaxLength = maxLen, MaxPromptLength = r.Get(MaxPromptLength), ChatTemplate = r.Get(ChatTemplate) };
    }

    /// <summary>Training and eval pairs (eval null when none).</summary>
    public (PreferenceDataset Train, PreferenceDataset? Eval) LoadPairs(Recipe r, TextTokenizer tokenizer, int context)
    {
        var enc = Encoding(r, context);
        Action<string> warn = m => r.Error.WriteLine("warning: " + m);
        if (r.Get(Data) is string path)
        {
            var train = PreferenceDataset.Load(path, tokenizer, enc, warn);
            var eval = EvalData is not null && r.Get(EvalData) is string ep ? PreferenceDataset.Load(ep, tokenizer, enc, warn) : null;
            if (eval is null && r.Get(HoldoutLast) is int n and > 0)
            {
                long cut = HoldoutStart(path, n);
                eval = train with { Source = $"{path} (last {n} lines)", Pairs = train.Pairs.Where(p => p.Line > cut).ToList() };
                train = train with { Pairs = train.Pairs.Where(p => p.Line <= cut).ToList() };
                if (train.Pairs.Count == 0 || eval.Pairs.Count == 0)
                    throw new FineAlignException($"--holdout-last {n} leaves {train.Pairs.Count} training and {eval.Pairs.Count} held-out pairs of {path}");
            }
            return (train, eval);
        }
        var (tr, ev) = BuiltinPairs(r.Get(CorpusSeed), r.Get(CorpusSize));
        return (PreferenceDataset.FromExamples(tr, BuiltinCorpus.Name, tokenizer, enc, warn),
                ev.Count > 0 ? PreferenceDataset.FromExamples(ev, BuiltinCorpus.Name + " (held out)", tokenizer, enc, warn) : null);
    }

    /// <summary>Training and eval feedback (eval null when none); the built-in pairs are unpaired.</summary>
    public (FeedbackDataset Train, FeedbackDataset? Eval) LoadFeedback(Recipe r, TextTokenizer tokenizer, int context)
    {
        var enc = Encoding(r, context);
        Action<string> warn = m => r.Error.WriteLine("warning: " + m);
        if (r.Get(Data) is string path)
        {
            var train = FeedbackDataset.Load(path, tokenizer, enc, warn);
            var eval = EvalData is not null && r.Get(EvalData) is string ep ? FeedbackDataset.Load(ep, tokenizer, enc, warn) : null;
            if (eval is null && r.Get(HoldoutLast) is int n and > 0)
            {
                long cut = HoldoutStart(path, n);
                eval = train with { Source = $"{path} (last {n} lines)", Examples = train.Examples.Where(e => e.Line > cut).ToList() };
                train = train with { Examples = train.Examples.Where(e => e.Line <= cut).ToList() };
                if (train.Examples.Count == 0 || eval.Examples.Count == 0)
                    throw new FineAlignException($"--holdout-last {n} leaves {train.Examples.Count} training and {eval.Examples.Count} held-out examples of {path}");
            }
            return (train, eval);
        }
        var (tr, ev) = BuiltinPairs(r.Get(CorpusSeed), r.Get(CorpusSize));
        return (FeedbackDataset.FromExamples(Unpair(tr), BuiltinCorpus.Name, tokenizer, enc, warn),
                ev.Count > 0 ? FeedbackDataset.FromExamples(Unpair(ev), BuiltinCorpus.Name + " (held out)", tokenizer, enc, warn) : null);
    }

    /// <summary>Line number after which the last <paramref name="n"/> lines of the file start.</summary>
    public static long HoldoutStart(string path, int n)
    {
        long lines = File.ReadLines(path).LongCount();
        if (n >= lines) throw new FineAlignException($"--holdout-last {n}: {path} has only {lines} lines");
        return lines - n;
    }

    /// <summary>Built-in pairs split by held-out prompts (line numbers are review numbers).</summary>
    public static (List<PreferenceExample> Train, List<PreferenceExample> Eval) BuiltinPairs(int seed, int count)
    {
        var train = new List<PreferenceExample>();
        var eval = new List<PreferenceExample>();
        foreach (var r in ReviewCorpus.Generate(seed, count))
            foreach (var p in ReviewCorpus.PreferencePairs([r]))
                (ReviewCorpus.IsEvalPrompt(r.Prompt, seed) ? eval : train).Add(new PreferenceExample(r.Index + 1, PreferenceFormat.PromptChosenRejected,
                    new PromptCompletionExample(r.Index + 1, p.Prompt, p.Chosen), new PromptCompletionExample(r.Index + 1, p.Prompt, p.Rejected)));
        return (train, eval);
    }

    private static IEnumerable<FeedbackExample> Unpair(IEnumerable<PreferenceExample> pairs) =>
        pairs.SelectMany(p => new[]
        {
            new FeedbackExample(p.Line, FeedbackFormat.UnpairedPreferences, p.Chosen, true),
            new FeedbackExample(p.Line, FeedbackFormat.UnpairedPreferences, p.Rejected, false),
        });

    /// <summary>The policy for dpo/kto/bco: --model is required (fine-tuning a fresh model from preferences makes little sense).</summary>
    public static (CausalLM Model, TextTokenizer Tokenizer, string Description) RequirePolicy(Recipe r, TrainingFlags flags, string command)
    {
        if (r.Get(flags.Model) is not string dir)
            throw new FineAlignException($"{command} needs --model: the model to fine-tune, usually an SFT output such as runs/sft/model " +
                                         "(train one with 'finealign sft'); it is also the reference unless --ref-model is given.");
        string resolved = ModelFolder.Resolve(dir);
        var tokenizer = TokenizerLoader.Load(ModelIO.TokenizerFolder(resolved));
        var model = flags.Peft.Prepare(r, ModelIO.Load(resolved), resolved, r.Get(flags.Seed));
        return (model, tokenizer, $"{model.Config.ModelType} model from {resolved}{flags.Peft.Describe(r)}");
    }

    /// <summary>The --ref-model folder as a frozen model, or null (the initial policy is the reference).</summary>
    public static CausalLM? LoadReference(string? folder, CausalLM policy)
    {
        if (folder is null) return null;
        var reference = ModelIO.Load(ModelFolder.Resolve(folder));
        if (reference.Config.VocabSize != policy.Config.VocabSize)
        {
            reference.Dispose();
            throw new FineAlignException($"{folder}: the reference model's vocabulary ({reference.Config.VocabSize}) differs from the policy's ({policy.Config.VocabSize}); they must share a tokenizer.");
        }
        return reference;
    }

    public static string Describe(PreferenceDataset d) => $"{d.Pairs.Count} pairs ({PreferenceReader.Describe(d.Format)})";
    public static string Describe(FeedbackDataset d) => $"{d.Examples.Count} examples, {d.Desirable} thumbs-up / {d.Undesirable} thumbs-down ({FeedbackReader.Describe(d.Format)})";
}

/// <summary>The end-of-run summary of the preference trainers: last train and eval metrics under TRL's names.</summary>
internal static class PreferenceReport
{
    public static int Finish(Recipe r, string command, TrainingResult result, TrainingOptions options, string saved, params string[] keys)
    {
        var inv = CultureInfo.InvariantCulture;
        if (!result.Completed)
        {
            r.Out.WriteLine($"{command}: stopped at step {result.GlobalStep}; checkpoint {result.LastCheckpoint}. Continue with --resume.");
            return 130;
        }
        var last = result.LogHistory.LastOrDefault(e => e.ContainsKey("loss"));
        var lastEval = result.LogHistory.LastOrDefault(e => e.ContainsKey("eval/loss"));
        string Fmt(Dictionary<string, double>? e, string prefix) => e is null ? "" : string.Join(", ",
            new[] { "loss" }.Concat(keys).Where(k => e.ContainsKey(prefix + k)).Select(k => string.Create(inv, $"{prefix + k} {e[prefix + k]:F4}")));
        r.Out.WriteLine($"{command}: {result.GlobalStep} steps; train (last window): {Fmt(last, "")}");
        if (lastEval is not null) r.Out.WriteLine($"{command}: held out: {Fmt(lastEval, "eval/")}");
        r.Out.WriteLine($"{command}: {saved}; metrics in {Path.Combine(options.OutputDir, MetricsLogger.JsonlFile)}" +
                        (result.LossCurvePng is null ? "" : $", curve {result.LossCurvePng}"));
        return 0;
    }
}
