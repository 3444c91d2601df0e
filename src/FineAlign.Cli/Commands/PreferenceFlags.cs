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
    public required Option<int?> Folds { get; init; }
    public required Option<int?> Fold { get; init; }
    public required Option<int> FoldSeed { get; init; }

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
            ChatTemplate = cmd.Declare<string?>("--chat-template", null, GenerateCommand.ChatTemplateHelp),
            CorpusSize = cmd.Declare("--corpus-size", 4000, "Reviews generated for the built-in preference pairs.", check: v => v >= 10 ? null : "must be at least 10"),
            CorpusSeed = cmd.Declare("--corpus-seed", ReviewCorpus.DefaultSeed, "Seed of the built-in corpus (kept apart from --seed so runs with different seeds see the same data)."),
            HoldoutLast = cmd.Declare("--holdout-last", 0, evalData
                ? "Hold out the last N lines of --data as the eval set (when --eval-data is not given); 0 = none."
                : "Evaluate only the last N lines of --data (the part a training run held out with the same value); 0 = all.",
                check: v => v >= 0 ? null : "must be ≥ 0"),
            Folds = cmd.Declare<int?>("--folds", null, "K-fold cross-validation over the lines of --data: split the file into N folds " +
                                                       "(seeded shuffle, dealt round-robin; the folds partition the file). Needs --fold."),
            Fold = cmd.Declare<int?>("--fold", null, evalData
                ? "Which fold (1 to --folds) is held out as the eval set; the other folds train."
                : "Evaluate only this fold (1 to --folds) of --data: the part a training run with the same --folds/--fold/--fold-seed held out."),
            FoldSeed = cmd.Declare("--fold-seed", 0, "Seed of the fold partition (kept apart from --seed so runs with different seeds share folds)."),
        };
    }

    /// <summary>
    /// The --folds/--fold choice, checked (null when not given); folds split a --data file and replace --holdout-last and
    /// --eval-data, so combining them is an error.
    /// </summary>
    public FoldSpec? FoldChoice(Recipe r)
    {
        var spec = FoldSpec.From(r.Get(Folds), r.Get(Fold), r.Get(FoldSeed));
        if (spec is null) return null;
        if (r.Get(Data) is null) throw new FineAlignException("--folds/--fold split a --data file; the built-in pairs have their own held-out set.");
        if (r.Get(HoldoutLast) > 0) throw new FineAlignException("--folds/--fold and --holdout-last both choose the held-out lines: give one.");
        if (EvalData is not null && r.Get(EvalData) is not null) throw new FineAlignException("--folds/--fold hold out a fold of --data: drop --eval-data.");
        return spec;
    }

    /// <param name="modelFolder">The resolved model folder (its chat_template.jinja and named templates are used, as sft does); null for a fresh model.</param>
    public PreferenceEncoding Encoding(Recipe r, int context, string? modelFolder)
    {
        int maxLen = r.Get(MaxLength) ?? context;
        if (maxLen > context) throw new FineAlignException($"--max-length {maxLen} exceeds the model's context of {context} tokens.");
        return new PreferenceEncoding { MaxLength = maxLen, MaxPromptLength = r.Get(MaxPromptLength), ChatTemplate = r.Get(ChatTemplate), TemplateFolder = modelFolder };
    }

    /// <summary>Training and eval pairs (eval null when none).</summary>
    public (PreferenceDataset Train, PreferenceDataset? Eval) LoadPairs(Recipe r, TextTokenizer tokenizer, int context, string? modelFolder)
    {
        var enc = Encoding(r, context, modelFolder);
        Action<string> warn = m => r.Error.WriteLine("warning: " + m);
        var folds = FoldChoice(r);   // checked first: --folds without --data is an error, not ignored
        if (r.Get(Data) is string path)
        {
            var train = PreferenceDataset.Load(path, tokenizer, enc, warn);
            if (folds is not null)
            {
                var (kept, held) = KFold.Split(train.Pairs, p => p.Line, path, folds, "pairs");
                return (train with { Pairs = kept }, train with { Source = folds.Describe(path), Pairs = held });
            }
            var eval = EvalData is not null && r.Get(EvalData) is string ep ? PreferenceDataset.Load(ep, tokenizer, enc, warn) : null;
            if (eval is null && r.Get(HoldoutLast) is int n and > 0)
            {
                var (kept, held) = HoldOut.LastLines(train.Pairs, p => p.Line, path, n, "pairs");
                (train, eval) = (train with { Pairs = kept }, train with { Source = HoldOut.Describe(path, n), Pairs = held });
            }
            return (train, eval);
        }
        var (tr, ev) = BuiltinData.PreferencePairs(r.Get(CorpusSeed), r.Get(CorpusSize));
        return (PreferenceDataset.FromExamples(tr, BuiltinData.Name, tokenizer, enc, warn),
                ev.Count > 0 ? PreferenceDataset.FromExamples(ev, BuiltinData.Name + " (held out)", tokenizer, enc, warn) : null);
    }

    /// <summary>Training and eval feedback (eval null when none); the built-in pairs are unpaired.</summary>
    public (FeedbackDataset Train, FeedbackDataset? Eval) LoadFeedback(Recipe r, TextTokenizer tokenizer, int context, string? modelFolder)
    {
        var enc = Encoding(r, context, modelFolder);
        Action<string> warn = m => r.Error.WriteLine("warning: " + m);
        var folds = FoldChoice(r);   // checked first: --folds without --data is an error, not ignored
        if (r.Get(Data) is string path)
        {
            var train = FeedbackDataset.Load(path, tokenizer, enc, warn);
            if (folds is not null)
            {
                var (kept, held) = KFold.Split(train.Examples, e => e.Line, path, folds, "examples");
                return (train with { Examples = kept }, train with { Source = folds.Describe(path), Examples = held });
            }
            var eval = EvalData is not null && r.Get(EvalData) is string ep ? FeedbackDataset.Load(ep, tokenizer, enc, warn) : null;
            if (eval is null && r.Get(HoldoutLast) is int n and > 0)
            {
                var (kept, held) = HoldOut.LastLines(train.Examples, e => e.Line, path, n, "examples");
                (train, eval) = (train with { Examples = kept }, train with { Source = HoldOut.Describe(path, n), Examples = held });
            }
            return (train, eval);
        }
        var (tr, ev) = BuiltinData.PreferencePairs(r.Get(CorpusSeed), r.Get(CorpusSize));
        return (FeedbackDataset.FromExamples(BuiltinData.Unpair(tr), BuiltinData.Name, tokenizer, enc, warn),
                ev.Count > 0 ? FeedbackDataset.FromExamples(BuiltinData.Unpair(ev), BuiltinData.Name + " (held out)", tokenizer, enc, warn) : null);
    }

    /// <summary>Line number after which the last <paramref name="n"/> lines of the file start: <see cref="HoldOut.StartLine"/>.</summary>
    public static long HoldoutStart(string path, int n) => HoldOut.StartLine(path, n);

    /// <summary>The policy for dpo/kto/bco: --model is required (fine-tuning a fresh model from preferences makes little sense).</summary>
    public static (CausalLM Model, TextTokenizer Tokenizer, string Description) RequirePolicy(Recipe r, TrainingFlags flags, string command)
    {
        if (r.Get(flags.Model) is not string dir)
            throw new FineAlignException($"{command} needs --model: the model to fine-tune, usually an SFT output such as runs/sft/model " +
                                         "(train one with 'finealign sft'); it is also the reference unless --ref-model is given.");
        string resolved = ModelFolder.Resolve(dir);
        var tokenizer = TokenizerLoader.Load(ModelIO.TokenizerFolder(resolved));
        var model = flags.Peft.Prepare(r, ModelIO.Load(resolved, flags.Peft.LoadDtype(r)), resolved, r.Get(flags.Seed));
        return (model, tokenizer, $"{model.Config.ModelType} model from {resolved}{flags.Peft.Describe(r)}");
    }

    /// <summary>The --ref-model folder as a frozen model, or null (the initial policy is the reference).</summary>
    public static CausalLM? LoadReference(string? folder, CausalLM policy)
    {
        if (folder is null) return null;
        var reference = ModelIO.Load(ModelFolder.Resolve(folder, "--ref-model"));
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
