using FineAlign.Objectives;
using System.Diagnostics;
using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FineAlign.Training;

/// <summary>The outcome of <see cref="Trainer{TBatch}.Train"/>.</summary>
public sealed record TrainingResult(long GlobalStep, IReadOnlyList<Dictionary<string, double>> LogHistory,
                                    string? LastCheckpoint, string? LossCurvePng, bool Completed);

/// <summary>
/// The shared training loop: AdamW (no decay on 1-D parameters), LR schedule with warmup, gradient
/// accumulation, gradient clipping, NaN guard, periodic eval/log/checkpoint, exact resume.
/// Objectives plug in as a step function <c>TBatch → LossResult</c> (SFT, DPO, PPO...).
/// </summary>
/// <remarks>
/// Determinism: data order is a pure function of (seed, epoch); the torch default generator (dropout),
/// <see cref="Generator"/> and <see cref="Rng"/> are checkpointed, so a resumed run on CPU reproduces
/// the uninterrupted loss curve bit for bit — given the same torch thread count (recorded in
/// trainer_state.json) and no other code drawing from the global torch generator concurrently.
/// </remarks>
public sealed class Trainer<TBatch> : IDisposable
{
    private readonly Func<TBatch, LossResult> _trainStep;
    private readonly Func<TBatch, LossResult> _evalStep;
    private readonly BatchSource<TBatch> _train;
    private readonly BatchSource<TBatch>? _eval;
    private readonly AdamW _optimizer;
    private readonly List<Parameter> _params;
    private readonly int _batchesPerEpoch;

    /// <param name="model">The module whose trainable parameters (requires_grad) are optimized and checkpointed.</param>
    /// <param name="trainStep">Computes the loss of one micro-batch (called in train mode, with grad).</param>
    /// <param name="trainData">Training examples; shuffled per epoch by seed.</param>
    /// <param name="evalData">Optional eval examples, read in order.</param>
    /// <param name="evalStep">Eval loss of one batch (called in eval mode, no grad); defaults to <paramref name="trainStep"/>.</param>
    public Trainer(nn.Module model, TrainingOptions options, Func<TBatch, LossResult> trainStep,
                   BatchSource<TBatch> trainData, BatchSource<TBatch>? evalData = null,
                   Func<TBatch, LossResult>? evalStep = null)
    {
        options.Validate();
        Model = model;
        Options = options;
        _trainStep = trainStep;
        _evalStep = evalStep ?? trainStep;
        _train = trainData;
        _eval = evalData;
        _batchesPerEpoch = DataOrder.BatchesPerEpoch(trainData.ExampleCount, options.PerDeviceTrainBatchSize);
        TotalSteps = options.MaxSteps > 0
            ? options.MaxSteps
            : Math.Max(1, (long)Math.Ceiling(options.NumTrainEpochs * _batchesPerEpoch / options.GradientAccumulationSteps));

        // Decoupled weight decay on matrices only; norms and biases (1-D) are not decayed (as in nanoGPT/HF).
        var named = model.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        if (named.Count == 0) throw new FineAlignException("the model has no trainable parameters (all have requires_grad = false)");
        _params = named.Select(p => p.parameter).ToList();
        var decay = named.Where(p => p.parameter.dim() >= 2).Select(p => p.parameter).ToList();
        var noDecay = named.Where(p => p.parameter.dim() < 2).Select(p => p.parameter).ToList();
        var groups = new List<AdamW.ParamGroup>();
        if (decay.Count > 0) groups.Add(new AdamW.ParamGroup(decay, options.LearningRate, options.AdamBeta1, options.AdamBeta2, options.AdamEpsilon, options.WeightDecay));
        if (noDecay.Count > 0) groups.Add(new AdamW.ParamGroup(noDecay, options.LearningRate, options.AdamBeta1, options.AdamBeta2, options.AdamEpsilon, 0.0));
        _optimizer = optim.AdamW(groups, options.LearningRate, options.AdamBeta1, options.AdamBeta2, options.AdamEpsilon, options.WeightDecay);

        Generator = new torch.Generator((ulong)options.Seed);
        Rng = new SplitMix64((ulong)options.Seed);
        State = NewState();
    }

    public nn.Module Model { get; }
    public TrainingOptions Options { get; }
    /// <summary>Optimizer steps of the whole run.</summary>
    public long TotalSteps { get; }
    public int BatchesPerEpoch => _batchesPerEpoch;
    /// <summary>Seeded torch generator for step functions that sample (e.g. PPO rollouts); checkpointed.</summary>
    public torch.Generator Generator { get; }
    /// <summary>Seeded managed RNG for step functions; checkpointed.</summary>
    public SplitMix64 Rng { get; }
    /// <summary>Live bookkeeping (global step, data position, log history).</summary>
    public TrainerState State { get; private set; }
    /// <summary>Reported after every optimizer step (stage "train"; metrics learning_rate, grad_norm, epoch); the CLI renders it.</summary>
    public IProgress<ProgressUpdate>? Progress { get; set; }
    /// <summary>Writes the model weights into a checkpoint folder; default TorchSharp's format (model.bin).
    /// Trainers of Hugging Face models write a loadable HF folder instead.</summary>
    public Action<string>? SaveModelWeights { get; init; }
    /// <summary>Reads what <see cref="SaveModelWeights"/> wrote back into the model.</summary>
    public Action<string>? LoadModelWeights { get; init; }
    /// <summary>Writes extra resumable state (e.g. BCO's reward shift) into a checkpoint folder, after the weights.</summary>
    public Action<string>? SaveExtraState { get; init; }
    /// <summary>Reads what <see cref="SaveExtraState"/> wrote, when a checkpoint is loaded.</summary>
    public Action<string>? LoadExtraState { get; init; }
    /// <summary>Raised with every metrics entry written (train and eval).</summary>
    public event Action<IReadOnlyDictionary<string, double>>? Logged;
    /// <summary>Raised with the step number after gradients are accumulated and clipped, just before
    /// the AdamW update (parameters' .grad hold the final gradients): for inspection and tests.</summary>
    public event Action<long>? BeforeOptimizerStep;
    public bool WriteTensorBoard { get; init; } = true;
    /// <summary>Write loss.png into the output folder at the end.</summary>
    public bool WriteLossCurve { get; init; } = true;
    /// <summary>Unit of the objective on the loss curve's y axis (see <see cref="LossUnits"/>).</summary>
    public string LossUnit { get; init; } = LossUnits.NatsPerToken;

    /// <summary>Trains to <see cref="TotalSteps"/> (resuming first if the options ask for it).
    /// Cancellation stops after the current step and saves a checkpoint.</summary>
    public TrainingResult Train(CancellationToken cancellation = default)
    {
        var o = Options;
        // Resolve the resume target first: a bad --resume-from must leave nothing behind (not even training_args.json).
        string? lastCheckpoint = ResolveResume();
        Directory.CreateDirectory(o.OutputDir);
        CheckpointStore.CleanTemporary(o.OutputDir);

        if (lastCheckpoint is not null) LoadCheckpoint(lastCheckpoint);
        else
        {
            // A fresh run into a folder holding another run's checkpoints would mix the two runs
            // (and "latest" could later pick the old one).
            if (CheckpointStore.Latest(o.OutputDir) is string existing)
                throw new FineAlignException($"output folder '{o.OutputDir}' already holds {Path.GetFileName(existing)}; " +
                                             "resume it (--resume) or choose another output folder (--out)");
            State = NewState();
            torch.manual_seed(o.Seed);
            Generator.manual_seed(o.Seed);
            Rng.State = (ulong)o.Seed;
        }

        AtomicFile.WriteAllText(Path.Combine(o.OutputDir, CheckpointStore.ArgsFile), JsonSerializer.Serialize(o, TrainerState.Json));
        using var logger = new MetricsLogger(o.OutputDir, State.GlobalStep, WriteTensorBoard);
        var clock = Stopwatch.StartNew();
        double elapsedBefore = State.ElapsedSeconds, lastLogTime = 0, windowTokensHere = 0;
        long savedAt = lastCheckpoint is null ? -1 : State.GlobalStep;
        int accum = o.GradientAccumulationSteps;
        var position = new DataPosition(State.DataEpoch, State.DataBatchIndex);
        long startStep = State.GlobalStep;

        Model.train();
        while (State.GlobalStep < TotalSteps && !cancellation.IsCancellationRequested)
        {
            long step = State.GlobalStep + 1; // 1-based number of the update being computed
            double lr = LrSchedule.LearningRate(o, State.GlobalStep, TotalSteps);
            foreach (var g in _optimizer.ParamGroups) g.LearningRate = lr;

            double stepLoss = 0;
            long stepTokens = 0;
            // Mixed precision casts each fp32 master once per optimizer step (the scope ends before the step changes them).
            using (Models.MasterCast.Step())
            for (int micro = 0; micro < accum; micro++)
            {
                using var scope = NewDisposeScope();
                var batch = _train.Batch(o.Seed, position, o.PerDeviceTrainBatchSize);
                position = position.Next(_batchesPerEpoch);
                State.MicroBatchesSeen++;
                var r = _trainStep(batch);
                double loss = r.Loss.ToDouble();
                if (!double.IsFinite(loss))
                    throw new FineAlignException(
                        $"loss is {(double.IsNaN(loss) ? "NaN" : "infinite")} at step {step}; lower the learning rate " +
                        $"(now {lr:G3}), check the data, or resume from an earlier checkpoint");
                (accum == 1 ? r.Loss : r.Loss / accum).backward();
                stepLoss += loss / accum;
                stepTokens += r.Tokens;
                if (r.Metrics is not null)
                    foreach (var (k, v) in r.Metrics)
                        State.WindowMetrics[k] = State.WindowMetrics.GetValueOrDefault(k) + v / accum;
            }

            // Pre-clip global L2 norm; an infinite max_norm only measures (clip coefficient stays 1).
            double gradNorm = nn.utils.clip_grad_norm_(_params, o.MaxGradNorm > 0 ? o.MaxGradNorm : double.PositiveInfinity);
            if (!double.IsFinite(gradNorm))
                throw new FineAlignException(
                    $"gradient norm is {(double.IsNaN(gradNorm) ? "NaN" : "infinite")} at step {step}; lower the learning rate " +
                    $"(now {lr:G3}) or set max_grad_norm");
            BeforeOptimizerStep?.Invoke(step);
            _optimizer.step();
            _optimizer.zero_grad();

            State.GlobalStep = step;
            State.DataEpoch = position.Epoch;
            State.DataBatchIndex = position.BatchIndex;
            State.Epoch = (double)State.MicroBatchesSeen / _batchesPerEpoch;
            State.TotalTokens += stepTokens;
            State.WindowLossSum += stepLoss;
            State.WindowTokens += stepTokens;
            State.WindowSteps++;
            windowTokensHere += stepTokens;

            double elapsed = elapsedBefore + clock.Elapsed.TotalSeconds;
            State.ElapsedSeconds = elapsed;
            Progress?.Report(new ProgressUpdate("train", step, TotalSteps, stepLoss, new Dictionary<string, double>
            {
                ["learning_rate"] = lr, ["grad_norm"] = gradNorm, ["epoch"] = Math.Round(State.Epoch, 3),
            }));

            if (step % o.LoggingSteps == 0 || step == TotalSteps)
            {
                double now = clock.Elapsed.TotalSeconds, window = now - lastLogTime;
                var entry = new Dictionary<string, double>
                {
                    ["step"] = step,
                    ["epoch"] = State.Epoch,
                    ["loss"] = State.WindowLossSum / State.WindowSteps,
                    ["learning_rate"] = lr,
                    ["grad_norm"] = gradNorm,
                };
                foreach (var (k, v) in State.WindowMetrics) entry[k] = v / State.WindowSteps;
                // Throughput over this process's part of the window (after a resume the dead run's part is unknown).
                if (windowTokensHere > 0 && window > 0) entry["tokens_per_second"] = windowTokensHere / window;
                Log(logger, entry);
                State.WindowLossSum = 0; State.WindowTokens = 0; State.WindowSteps = 0; State.WindowMetrics.Clear();
                lastLogTime = now;
                windowTokensHere = 0;
            }

            if (_eval is not null && ((o.EvalSteps > 0 && step % o.EvalSteps == 0) || step == TotalSteps))
            {
                var (evalLoss, evalMetrics) = EvaluateWithMetrics();
                var entry = new Dictionary<string, double> { ["step"] = step, ["epoch"] = State.Epoch, ["eval/loss"] = evalLoss };
                foreach (var (k, v) in evalMetrics) entry["eval/" + k] = v;
                Log(logger, entry);
            }

            if ((o.SaveSteps > 0 && step % o.SaveSteps == 0) || step == TotalSteps)
            {
                lastCheckpoint = SaveCheckpoint();
                savedAt = step;
            }
        }

        if (savedAt != State.GlobalStep && State.GlobalStep > 0) lastCheckpoint = SaveCheckpoint();

        string? png = null;
        if (WriteLossCurve && State.LogHistory.Count > 0)
        {
            png = Path.Combine(o.OutputDir, "loss.png");
            Plots.LossCurve(State.LogHistory, png, $"Training loss ({State.GlobalStep} steps)", lossUnit: LossUnit);
        }
        return new TrainingResult(State.GlobalStep, State.LogHistory, lastCheckpoint, png, State.GlobalStep >= TotalSteps);
    }

    /// <summary>Mean eval loss over the eval batches (eval mode, no grad).</summary>
    public double Evaluate() => EvaluateWithMetrics().Loss;

    /// <summary>Mean eval loss and the eval step's metrics, each averaged over the eval batches (eval mode, no grad).</summary>
    public (double Loss, Dictionary<string, double> Metrics) EvaluateWithMetrics()
    {
        if (_eval is null) throw new InvalidOperationException("no eval data was given to the trainer");
        bool wasTraining = Model.training;
        Model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            using var casts = Models.MasterCast.Step();   // the weights are fixed for the whole eval pass
            int n = _eval.InOrderBatchCount(Options.PerDeviceEvalBatchSize);
            double sum = 0;
            var metrics = new Dictionary<string, double>();
            for (int i = 0; i < n; i++)
            {
                using var scope = NewDisposeScope();
                var r = _evalStep(_eval.InOrderBatch(i, Options.PerDeviceEvalBatchSize));
                sum += r.Loss.ToDouble();
                if (r.Metrics is not null)
                    foreach (var (k, v) in r.Metrics) metrics[k] = metrics.GetValueOrDefault(k) + v / n;
            }
            return (sum / n, metrics);
        }
        finally
        {
            if (wasTraining) Model.train();
        }
    }

    /// <summary>Writes checkpoint-{GlobalStep} (atomically) and prunes old ones; returns its path.</summary>
    public string SaveCheckpoint()
    {
        State.RngState = Rng.State;
        State.TorchNumThreads = torch.get_num_threads();
        return CheckpointStore.Save(Options.OutputDir, State.GlobalStep, dir =>
        {
            if (SaveModelWeights is not null) SaveModelWeights(dir);
            else Model.save(Path.Combine(dir, CheckpointStore.ModelFile));
            SaveExtraState?.Invoke(dir);
            _optimizer.save_state_dict(Path.Combine(dir, CheckpointStore.OptimizerFile));
            WriteRng(Path.Combine(dir, CheckpointStore.RngFile));
            File.WriteAllText(Path.Combine(dir, CheckpointStore.ArgsFile), JsonSerializer.Serialize(Options, TrainerState.Json));
            State.Save(Path.Combine(dir, CheckpointStore.StateFile)); // last: its presence marks a complete folder
        }, Options.SaveTotalLimit);
    }

    /// <summary>Restores model, optimizer, RNGs, data position and log history from a checkpoint folder.</summary>
    public void LoadCheckpoint(string dir)
    {
        string statePath = Path.Combine(dir, CheckpointStore.StateFile);
        if (!File.Exists(statePath))
            throw new FineAlignException($"{dir}: not a checkpoint folder (no {CheckpointStore.StateFile})");
        var state = TrainerState.Load(statePath);
        if (state.Seed != Options.Seed)
            throw new FineAlignException($"{statePath}: field 'seed': the checkpoint was trained with seed {state.Seed} but --seed is {Options.Seed}; resume with --seed {state.Seed}");
        if (LoadModelWeights is not null) Guard(dir, "model weights", LoadModelWeights);
        else Guard(Path.Combine(dir, CheckpointStore.ModelFile), "model weights", p => Model.load(p));
        LoadExtraState?.Invoke(dir);
        Guard(Path.Combine(dir, CheckpointStore.OptimizerFile), "optimizer state", p => _optimizer.load_state_dict(p));
        Guard(Path.Combine(dir, CheckpointStore.RngFile), "RNG state", ReadRng);
        Rng.State = state.RngState;
        State = state;
        State.MaxSteps = TotalSteps;
    }

    public void Dispose()
    {
        _optimizer.Dispose();
        Generator.Dispose();
    }

    private void Log(MetricsLogger logger, Dictionary<string, double> entry)
    {
        logger.Log(entry);
        State.LogHistory.Add(entry);
        Logged?.Invoke(entry);
    }

    private TrainerState NewState() => new() { Seed = Options.Seed, MaxSteps = TotalSteps };

    private string? ResolveResume()
    {
        string? r = Options.ResumeFromCheckpoint;
        if (string.IsNullOrWhiteSpace(r)) return null;
        if (r.Equals("latest", StringComparison.OrdinalIgnoreCase) || r.Equals("true", StringComparison.OrdinalIgnoreCase))
            return CheckpointStore.Latest(Options.OutputDir);
        if (!File.Exists(Path.Combine(r, CheckpointStore.StateFile)))
            throw new FineAlignException($"--resume-from {r}: not a checkpoint folder (no {CheckpointStore.StateFile})");
        return r;
    }

    private static void Guard(string path, string what, Action<string> load)
    {
        if (!File.Exists(path) && !Directory.Exists(path)) throw new FineAlignException($"{path}: missing {what} in checkpoint");
        try { load(path); }
        catch (Exception e) when (e is not FineAlignException)
        {
            throw new FineAlignException($"{path}: cannot load {what} ({e.Message.Split('\n')[0]}); was it written for a different model?", e);
        }
    }

    // Layout: [int32 n][n bytes] torch default generator, then the same for Generator.
    private void WriteRng(string path)
    {
        using var w = new BinaryWriter(File.Create(path));
        foreach (var g in new[] { torch.get_rng_state(), Generator.get_state() })
        {
            using (g)
            {
                var bytes = g.data<byte>().ToArray();
                w.Write(bytes.Length);
                w.Write(bytes);
            }
        }
    }

    private void ReadRng(string path)
    {
        using var r = new BinaryReader(File.OpenRead(path));
        using var global = torch.tensor(r.ReadBytes(r.ReadInt32()), dtype: ScalarType.Byte);
        using var own = torch.tensor(r.ReadBytes(r.ReadInt32()), dtype: ScalarType.Byte);
        torch.set_rng_state(global);
        Generator.set_state(own);
    }
}
