using System.CommandLine;
using FineAlign.Models;
using FineAlign.Text;
using FineAlign.Training;
using TorchSharp;

namespace FineAlign.Cli.Commands;

/// <summary>
/// The options every training command shares (TRL TrainingArguments names, kebab-case), declared once
/// and turned into <see cref="TrainingOptions"/>; plus where the model comes from.
/// </summary>
internal sealed class TrainingFlags
{
    public required Option<string> Out { get; init; }
    public required Option<string?> Model { get; init; }
    public required Option<string> Init { get; init; }
    public required Option<string?> Tokenizer { get; init; }
    public required Option<int> ContextLength { get; init; }
    public required Option<double?> LearningRate { get; init; }
    public required Option<double> WeightDecay { get; init; }
    public required Option<LrSchedulerType> LrScheduler { get; init; }
    public required Option<int> WarmupSteps { get; init; }
    public required Option<double> WarmupRatio { get; init; }
    public required Option<int> MaxSteps { get; init; }
    public required Option<double> NumEpochs { get; init; }
    public required Option<int> BatchSize { get; init; }
    public required Option<int> EvalBatchSize { get; init; }
    public required Option<int> GradientAccumulation { get; init; }
    public required Option<double> MaxGradNorm { get; init; }
    public required Option<int> EvalSteps { get; init; }
    public required Option<int> SaveSteps { get; init; }
    public required Option<int> LoggingSteps { get; init; }
    public required Option<int?> SaveTotalLimit { get; init; }
    public required Option<int> Seed { get; init; }
    public required Option<bool> Resume { get; init; }
    public required Option<string?> ResumeFrom { get; init; }
    public required Option<int> Threads { get; init; }
    /// <summary>LoRA, bf16, gradient checkpointing, device (shared with the online trainers).</summary>
    public required PeftFlags Peft { get; init; }

    /// <summary>Default peak LR when fine-tuning a pretrained model (TRL's SFT default).</summary>
    public const double FineTuneLr = 2e-5;

    private double _scratchLr;

    public static TrainingFlags Declare(RecipeCommand cmd, string defaultOut, double defaultLr, int defaultMaxSteps)
    {
        static Func<int, string?> AtLeast(int min) => v => v >= min ? null : $"must be at least {min}";
        return new TrainingFlags
        {
            _scratchLr = defaultLr,
            Out = cmd.Declare("--out", defaultOut, "Output folder: checkpoints, metrics.jsonl, TensorBoard runs/, loss.png and the final model in model/.", alias: "-o"),
            Model = cmd.Declare<string?>("--model", null, "Hugging Face model folder to start from (config.json, *.safetensors, tokenizer files). " +
                                                          "Omitted: a fresh model of the --init preset with the built-in byte tokenizer."),
            Init = cmd.Declare("--init", "small", $"Preset shape for a model trained from scratch ({string.Join(", ", ModelPresets.Names)}).",
                check: v => ModelPresets.Names.Contains(v) ? null : $"must be one of {string.Join(", ", ModelPresets.Names)}"),
            Tokenizer = cmd.Declare<string?>("--tokenizer", null, "Tokenizer folder for a model trained from scratch (e.g. made by finealign tokenizer train). Omitted: the built-in byte tokenizer. Ignored with --model."),
            ContextLength = cmd.Declare("--context-length", 384, "Context length of a model trained from scratch (tokens; the byte tokenizer uses one per byte).", check: AtLeast(8)),
            LearningRate = cmd.Declare<double?>("--learning-rate", null, $"Peak learning rate of AdamW (default {defaultLr:G} for a model trained from scratch, {FineTuneLr:G} with --model).",
                check: v => v is null || (v > 0 && double.IsFinite(v.Value)) ? null : "must be a positive number", alias: "--lr"),
            WeightDecay = cmd.Declare("--weight-decay", 0.0, "Decoupled weight decay (matrices and embeddings; not norms or biases).", check: v => v >= 0 ? null : "must be ≥ 0"),
            LrScheduler = cmd.Declare("--lr-scheduler", LrSchedulerType.Cosine, "Learning-rate schedule after warm-up."),
            WarmupSteps = cmd.Declare("--warmup-steps", 0, "Linear warm-up steps (overrides --warmup-ratio when > 0).", check: AtLeast(0)),
            WarmupRatio = cmd.Declare("--warmup-ratio", 0.05, "Warm-up as a fraction of all steps.", check: v => v is >= 0 and < 1 ? null : "must be in [0, 1)"),
            MaxSteps = cmd.Declare("--max-steps", defaultMaxSteps, "Optimizer steps to train (≤ 0: use --num-epochs).", alias: "--steps"),
            NumEpochs = cmd.Declare("--num-epochs", 1.0, "Epochs over the data when --max-steps ≤ 0.", check: v => v > 0 ? null : "must be positive"),
            BatchSize = cmd.Declare("--batch-size", 16, "Examples per micro-batch (per_device_train_batch_size).", check: AtLeast(1)),
            EvalBatchSize = cmd.Declare("--eval-batch-size", 32, "Examples per evaluation batch.", check: AtLeast(1)),
            GradientAccumulation = cmd.Declare("--gradient-accumulation-steps", 1, "Micro-batches per optimizer step.", check: AtLeast(1)),
            MaxGradNorm = cmd.Declare("--max-grad-norm", 1.0, "Gradient-norm clipping (0 disables clipping but still logs grad_norm).", check: v => v >= 0 ? null : "must be ≥ 0"),
            EvalSteps = cmd.Declare("--eval-steps", 100, "Evaluate every N steps (and at the end); 0 = only at the end.", check: AtLeast(0)),
            SaveSteps = cmd.Declare("--save-steps", 200, "Write a checkpoint every N steps (and at the end); 0 = only at the end.", check: AtLeast(0)),
            LoggingSteps = cmd.Declare("--logging-steps", 10, "Write metrics every N steps.", check: AtLeast(1)),
            SaveTotalLimit = cmd.Declare<int?>("--save-total-limit", 2, "Keep at most this many checkpoints (oldest removed).", check: v => v is null or >= 1 ? null : "must be at least 1"),
            Seed = cmd.Declare("--seed", 42, "Seed for initialisation, data order, dropout and sampling: same seed, same loss curve on CPU."),
            Resume = cmd.Declare("--resume", false, "Resume from the latest complete checkpoint in --out (same seed and options continue the identical loss curve)."),
            ResumeFrom = cmd.Declare<string?>("--resume-from", null, "Resume from this checkpoint folder (checkpoint-N)."),
            Threads = cmd.Declare("--threads", 0, "Torch CPU threads (0 = one per core). Part of the determinism contract: resume with the same value.", check: AtLeast(0)),
            Peft = PeftFlags.Declare(cmd),
        };
    }

    public TrainingOptions Build(Recipe r) => Peft.Apply(r, new TrainingOptions
    {
        OutputDir = r.Get(Out),
        LearningRate = r.Get(LearningRate) ?? (r.Get(Model) is null ? _scratchLr : FineTuneLr),
        WeightDecay = r.Get(WeightDecay),
        LrSchedulerType = r.Get(LrScheduler),
        WarmupSteps = r.Get(WarmupSteps),
        WarmupRatio = r.Get(WarmupRatio),
        MaxSteps = r.Get(MaxSteps),
        NumTrainEpochs = r.Get(NumEpochs),
        PerDeviceTrainBatchSize = r.Get(BatchSize),
        PerDeviceEvalBatchSize = r.Get(EvalBatchSize),
        GradientAccumulationSteps = r.Get(GradientAccumulation),
        MaxGradNorm = r.Get(MaxGradNorm),
        EvalSteps = r.Get(EvalSteps),
        SaveSteps = r.Get(SaveSteps),
        LoggingSteps = r.Get(LoggingSteps),
        SaveTotalLimit = r.Get(SaveTotalLimit),
        Seed = r.Get(Seed),
        ResumeFromCheckpoint = r.Get(ResumeFrom) ?? (r.Get(Resume) ? "latest" : null),
    });

    public void ApplyThreads(Recipe r)
    {
        int n = r.Get(Threads);
        if (n > 0) torch.set_num_threads(n);
    }

    /// <summary>The starting model and its tokenizer: a loaded HF folder, or a fresh preset with the byte tokenizer.</summary>
    /// <summary>Where the --model's chat_template.jinja and named templates are looked up (its tokenizer's folder); null without --model.</summary>
    public string? TemplateFolder(Recipe r) => r.Get(Model) is string given ? ModelIO.TokenizerFolder(ModelFolder.Resolve(given)) : null;

    public (CausalLM Model, TextTokenizer Tokenizer, string Description) LoadOrCreateModel(Recipe r)
    {
        if (r.Get(Model) is string given && ModelFolder.Resolve(given) is var dir)  // folder, checkpoint or hub-cache org/name; names --model
        {
            var tokenizer = TokenizerLoader.Load(ModelIO.TokenizerFolder(dir));
            var model = Peft.Prepare(r, ModelIO.Load(dir, Peft.LoadDtype(r)), dir, r.Get(Seed));
            return (model, tokenizer, $"{model.Config.ModelType} model from {dir}{Peft.Describe(r)}");
        }
        TextTokenizer scratchTokenizer = r.Get(Tokenizer) is string tokDir ? TokenizerLoader.Load(tokDir) : new ByteTokenizer();
        var config = ModelPresets.Create(r.Get(Init), scratchTokenizer, r.Get(ContextLength));
        var fresh = Peft.Prepare(r, ModelFactory.Create(config, r.Get(Seed)), null, r.Get(Seed));
        long n = fresh.parameters().Sum(p => p.numel());
        string tokName = r.Get(Tokenizer) is string td ? $"tokenizer {td}, {scratchTokenizer.VocabSize} tokens" : "byte tokenizer";
        return (fresh, scratchTokenizer, $"fresh '{r.Get(Init)}' model ({n / 1e6:F2}M parameters, {tokName}, context {config.MaxPositionEmbeddings}){Peft.Describe(r)}");
    }
}
