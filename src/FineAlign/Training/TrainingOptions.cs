namespace FineAlign.Training;

/// <summary>Learning-rate schedule after warmup (names as in transformers' lr_scheduler_type).</summary>
public enum LrSchedulerType { Constant, Linear, Cosine }

/// <summary>
/// Training hyperparameters. Names follow transformers' TrainingArguments (snake_case in
/// training_args.json: learning_rate, gradient_accumulation_steps, ...); defaults are theirs
/// unless noted. A step is one optimizer update.
/// </summary>
public sealed record TrainingOptions
{
    public double LearningRate { get; init; } = 5e-5;
    /// <summary>Decoupled AdamW decay, applied only to parameters with 2+ dimensions (not norms, biases).</summary>
    public double WeightDecay { get; init; } = 0.0;
    public double AdamBeta1 { get; init; } = 0.9;
    public double AdamBeta2 { get; init; } = 0.999;
    public double AdamEpsilon { get; init; } = 1e-8;

    public LrSchedulerType LrSchedulerType { get; init; } = LrSchedulerType.Linear;
    /// <summary>Warmup steps; when 0, <see cref="WarmupRatio"/> × total steps (rounded up) is used.</summary>
    public int WarmupSteps { get; init; } = 0;
    public double WarmupRatio { get; init; } = 0.0;

    /// <summary>Total optimizer steps; when &lt;= 0, derived from <see cref="NumTrainEpochs"/>.</summary>
    public int MaxSteps { get; init; } = -1;
    public double NumTrainEpochs { get; init; } = 3.0;
    public int PerDeviceTrainBatchSize { get; init; } = 8;
    public int PerDeviceEvalBatchSize { get; init; } = 8;
    public int GradientAccumulationSteps { get; init; } = 1;
    /// <summary>Clip the global L2 gradient norm to this value; 0 disables clipping (the norm is still reported).</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>Evaluate every N steps (and at the end) when an eval set is given; 0 = only at the end.</summary>
    public int EvalSteps { get; init; } = 0;
    /// <summary>Write checkpoint-{step}/ every N steps; 0 = only the final checkpoint.</summary>
    public int SaveSteps { get; init; } = 500;
    /// <summary>Log metrics every N steps (default 10 instead of transformers' 500: runs here are small).</summary>
    public int LoggingSteps { get; init; } = 10;
    /// <summary>Keep at most this many checkpoints (oldest pruned); null keeps all.</summary>
    public int? SaveTotalLimit { get; init; }

    public int Seed { get; init; } = 42;
    public string OutputDir { get; init; } = "output";
    /// <summary>null: start fresh. "latest": newest checkpoint in <see cref="OutputDir"/> (fresh if none). Otherwise a checkpoint folder.</summary>
    public string? ResumeFromCheckpoint { get; init; }

    /// <summary>bf16 mixed precision (transformers' <c>bf16</c>): bf16 matmuls, fp32 master weights, optimizer, softmax and losses.</summary>
    public bool Bf16 { get; init; }
    /// <summary>Recompute each decoder layer in backward (transformers' <c>gradient_checkpointing</c>).</summary>
    public bool GradientCheckpointing { get; init; }
    /// <summary>Where models and batches live: "cpu" (default) or "cuda" / "cuda:N" (untested: no CUDA build is served here).</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>Throws a one-line <see cref="FineAlignException"/> naming the first bad option.</summary>
    public void Validate()
    {
        static void Check(bool ok, string name, object value, string rule)
        {
            if (!ok) throw new FineAlignException($"training option '{name}' = {value}: {rule}");
        }
        Check(double.IsFinite(LearningRate) && LearningRate >= 0, "learning_rate", LearningRate, "must be a finite number >= 0");
        Check(WeightDecay >= 0, "weight_decay", WeightDecay, "must be >= 0");
        Check(AdamBeta1 is >= 0 and < 1, "adam_beta1", AdamBeta1, "must be in [0, 1)");
        Check(AdamBeta2 is >= 0 and < 1, "adam_beta2", AdamBeta2, "must be in [0, 1)");
        Check(AdamEpsilon >= 0, "adam_epsilon", AdamEpsilon, "must be >= 0");
        Check(WarmupSteps >= 0, "warmup_steps", WarmupSteps, "must be >= 0");
        Check(WarmupRatio is >= 0 and <= 1, "warmup_ratio", WarmupRatio, "must be in [0, 1]");
        Check(MaxSteps > 0 || NumTrainEpochs > 0, "num_train_epochs", NumTrainEpochs, "must be > 0 when max_steps is not set");
        Check(PerDeviceTrainBatchSize > 0, "per_device_train_batch_size", PerDeviceTrainBatchSize, "must be > 0");
        Check(PerDeviceEvalBatchSize > 0, "per_device_eval_batch_size", PerDeviceEvalBatchSize, "must be > 0");
        Check(GradientAccumulationSteps > 0, "gradient_accumulation_steps", GradientAccumulationSteps, "must be > 0");
        Check(MaxGradNorm >= 0, "max_grad_norm", MaxGradNorm, "must be >= 0 (0 disables clipping)");
        Check(EvalSteps >= 0, "eval_steps", EvalSteps, "must be >= 0");
        Check(SaveSteps >= 0, "save_steps", SaveSteps, "must be >= 0");
        Check(LoggingSteps > 0, "logging_steps", LoggingSteps, "must be > 0");
        Check(SaveTotalLimit is null or > 0, "save_total_limit", SaveTotalLimit!, "must be > 0 (or unset to keep all)");
        Check(!string.IsNullOrWhiteSpace(OutputDir), "output_dir", OutputDir, "must be a folder path");
        Check(System.Text.RegularExpressions.Regex.IsMatch(Device ?? "", "^(cpu|cuda(:[0-9]+)?)$"), "device", Device!, "must be cpu, cuda or cuda:N");
    }

    /// <summary>Warmup length for a run of <paramref name="totalSteps"/> steps.</summary>
    public int WarmupStepsFor(long totalSteps)
        => WarmupSteps > 0 ? WarmupSteps : (int)Math.Ceiling(totalSteps * WarmupRatio);
}
