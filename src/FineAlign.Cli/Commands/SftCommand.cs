using System.Globalization;
using System.Text.Json;
using FineAlign.Data;
using FineAlign.Data.Corpus;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Text;
using FineAlign.Trainers;
using FineAlign.Training;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign sft</c>: supervised fine-tuning on prompt/completion or conversational data.</summary>
public static class SftCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("sft",
            "Supervised fine-tuning (TRL conventions): JSONL with prompt/completion, conversational messages, or text. " +
            "Loss on completion (assistant) tokens only unless --completion-only-loss false. Without --data it trains on the " +
            "built-in review corpus; without --model it starts from a fresh small model, so it runs with no downloads.");
        var flags = TrainingFlags.Declare(cmd, defaultOut: "runs/sft", defaultLr: 1e-3, defaultMaxSteps: 600);
        var data = cmd.Declare<string?>("--data", null, "Training JSONL (prompt/completion, messages, or text). Omitted: the built-in corpus.");
        var evalData = cmd.Declare<string?>("--eval-data", null, "Evaluation JSONL in the same format (built-in corpus: its held-out prompts).");
        var corpus = CorpusFlags.Declare(cmd, "Reviews generated when using the built-in corpus.", 20000, 10);
        var corpusSize = corpus.Size;
        var corpusSeed = corpus.Seed;
        var maxLength = cmd.Declare<int?>("--max-length", null, "Maximum tokens per example (default: the model's context).", check: v => v is null or >= 2 ? null : "must be at least 2");
        var overLength = cmd.Declare("--over-length", OverLengthPolicy.Truncate, "Examples longer than --max-length: truncate (with a warning and a count) or error.");
        var completionOnly = cmd.Declare("--completion-only-loss", true, "Train on completion/assistant tokens only (false: every token).");
        var packing = cmd.Declare("--packing", false, "Pack examples into full --max-length blocks (EOS-separated) instead of padding.");
        var chatTemplate = cmd.Declare<string?>("--chat-template", null, GenerateCommand.ChatTemplateHelp + " Assistant-only loss uses its {% generation %} blocks, else the replies found by rendering message prefixes.");
        var chatKwargs = cmd.Declare<string?>("--chat-template-kwargs", null, "JSON object of extra chat-template variables, e.g. '{\"enable_thinking\": false}'.");
        var samples = cmd.Declare("--samples", 4, "Sample generations from held-out prompts written after training (samples.jsonl).", check: v => v >= 0 ? null : "must be ≥ 0");

        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            var options = flags.Build(r);
            OutputCheck.Folder(options.OutputDir, "--out");
            var (model, tokenizer, description) = flags.LoadOrCreateModel(r);
            using var _ = model;
            OutputCheck.DiskSpace(options.OutputDir, model.parameters().Sum(p => p.numel()), options.SaveTotalLimit, "--out");
            int context = model.Config.MaxPositionEmbeddings;
            int maxLen = r.Get(maxLength) ?? context;
            if (maxLen > context)
                throw new FineAlignException($"--max-length {maxLen} exceeds the model's context of {context} tokens.");
            var sftOptions = new SftOptions
            {
                MaxLength = maxLen, OverLength = r.Get(overLength), CompletionOnlyLoss = r.Get(completionOnly), ChatTemplate = r.Get(chatTemplate),
                TemplateFolder = flags.TemplateFolder(r), ChatTemplateKwargs = TemplateCommand.ParseKwargs(r.Get(chatKwargs)),
            };
            Action<string> warn = m => r.Error.WriteLine("warning: " + m);

            SftDataset train, eval;
            List<string> heldOutPrompts;
            if (r.Get(data) is string path)
            {
                train = SftDataset.Load(path, tokenizer, sftOptions, warn);
                eval = r.Get(evalData) is string ep ? SftDataset.Load(ep, tokenizer, sftOptions, warn) : new SftDataset([], train.Format, 0, 0);
                heldOutPrompts = PromptsOf(r.Get(evalData) ?? path, r.Get(samples));
            }
            else
            {
                var (tr, ev) = BuiltinData.SftExamples(r.Get(corpusSeed), r.Get(corpusSize));
                train = SftDataset.FromExamples(tr, BuiltinData.Name, tokenizer, sftOptions, warn);
                eval = SftDataset.FromExamples(ev, BuiltinData.Name, tokenizer, sftOptions, warn);
                heldOutPrompts = ev.OfType<PromptCompletionExample>().Select(e => e.Prompt).Distinct().Take(r.Get(samples)).ToList();
            }
            var trainExamples = train.Examples;
            var evalExamples = eval.Examples;
            if (r.Get(packing))
            {
                int eos = tokenizer.EosId ?? throw new FineAlignException("--packing needs a tokenizer with an EOS token.");
                trainExamples = Packing.Pack(trainExamples, maxLen, eos);
                evalExamples = evalExamples.Count > 0 ? Packing.Pack(evalExamples, maxLen, eos, dropRemainder: false) : evalExamples;
            }

            r.Out.WriteLine($"sft: {description}");
            r.Out.WriteLine($"sft: {trainExamples.Count} training / {evalExamples.Count} eval sequences ({SftReader.Describe(train.Format)}), " +
                            $"max length {maxLen}, output {options.OutputDir}");
            var result = CliProgress.Run(r.Out, progress =>
                CausalLmTrainer.Train(model, tokenizer, trainExamples, evalExamples, options, progress, ct));
            return TrainingReport.Finish(r, "sft", result, options, model, tokenizer, heldOutPrompts, r.Get(data) is null, ct);
        });
        return cmd;
    }

    /// <summary>First prompts of a JSONL file (prompt/completion data) for sample generations.</summary>
    private static List<string> PromptsOf(string path, int n)
    {
        var list = new List<string>();
        if (n <= 0) return list;
        foreach (var ex in SftReader.Read(path))
        {
            if (ex is PromptCompletionExample pc) list.Add(pc.Prompt);
            if (list.Count >= n) break;
        }
        return list;
    }
}

/// <summary>What every causal-LM training command prints and writes at the end.</summary>
internal static class TrainingReport
{
    public static int Finish(Recipe r, string command, TrainingResult result, TrainingOptions options, CausalLM model,
                             TextTokenizer tokenizer, IReadOnlyList<string> samplePrompts, bool builtinCorpus, CancellationToken ct)
    {
        var inv = CultureInfo.InvariantCulture;
        var last = result.LogHistory.LastOrDefault(e => e.ContainsKey("loss"));
        var lastEval = result.LogHistory.LastOrDefault(e => e.ContainsKey("eval/loss"));
        if (!result.Completed || ct.IsCancellationRequested)
        {
            r.Out.WriteLine($"{command}: stopped at step {result.GlobalStep}; checkpoint {result.LastCheckpoint}. Continue with --resume.");
            return 130;
        }
        string evalText = lastEval is null ? "" : string.Create(inv, $", eval loss {lastEval["eval/loss"]:F4}");
        r.Out.WriteLine(string.Create(inv, $"{command}: {result.GlobalStep} steps, final loss {last?["loss"]:F4}{evalText}"));
        string modelDir = Path.Combine(options.OutputDir, CausalLmTrainer.ModelFolder);
        r.Out.WriteLine($"{command}: model saved to {modelDir} (Hugging Face format); metrics in {Path.Combine(options.OutputDir, MetricsLogger.JsonlFile)}" +
                        (result.LossCurvePng is null ? "" : $", curve {result.LossCurvePng}"));

        if (samplePrompts.Count == 0) return 0;
        var gen = TextGenerator.Generate(model, tokenizer, samplePrompts, new GenerationOptions
        {
            MaxNewTokens = Math.Min(160, model.Config.MaxPositionEmbeddings - samplePrompts.Max(p => tokenizer.Encode(p).Length) - 2),
            Temperature = 0.8, TopP = 0.95, Seed = options.Seed,
        });
        string samplesPath = Path.Combine(options.OutputDir, "samples.jsonl");
        using (var w = new StreamWriter(samplesPath + ".tmp"))
        {
            for (int i = 0; i < gen.Count; i++)
            {
                var line = new Dictionary<string, object> { ["prompt"] = samplePrompts[i], ["completion"] = gen[i].Text };
                // The lexicon is the built-in corpus's ground truth; on other data it would be a meaningless number.
                if (builtinCorpus) line["true_reward"] = Lexicon.TrueReward(samplePrompts[i] + gen[i].Text);
                w.WriteLine(JsonSerializer.Serialize(line));
            }
        }
        File.Move(samplesPath + ".tmp", samplesPath, overwrite: true);
        r.Out.WriteLine($"{command}: samples (temperature 0.8) → {samplesPath}" + (builtinCorpus ? " with the corpus's true reward"
            : "; no reward (not the built-in corpus: score them with finealign eval-policy --reward SPEC)"));
        for (int i = 0; i < gen.Count; i++)
            r.Out.WriteLine($"  {samplePrompts[i]}|{gen[i].Text.ReplaceLineEndings(" ")}");
        return 0;
    }
}
