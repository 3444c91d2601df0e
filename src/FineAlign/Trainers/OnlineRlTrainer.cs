using System.Diagnostics;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Text;
using FineAlign.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FineAlign.Trainers;

/// <summary>The outcome of <see cref="OnlineRlTrainer.Train"/>.</summary>
public sealed record OnlineRlResult(int Steps, IReadOnlyList<Dictionary<string, double>> LogHistory, string? LastCheckpoint, bool Completed);

/// <summary>
/// The online-RL engine behind ppo, grpo, rloo and REINFORCE++: rollout through an <see cref="IRolloutEngine"/> →
/// task rewards from a <see cref="RewardSource"/> (the [B, T] contract) → KL shaping → a registered advantage estimator
/// (<see cref="AdvantageEstimators"/>) → epochs of mini-batch updates with a registered policy loss
/// (<see cref="PolicyLosses"/>, plus PPO's clipped value loss when the estimator needs a critic) → atomic checkpoints.
/// Sampling seeds and mini-batch orders derive from (seed, step), so a resumed run continues the same sequence.
/// Metrics use TRL's PPO names with a critic and TRL's GRPO names without (<see cref="OnlineRlMetrics"/>).
/// </summary>
public sealed class OnlineRlTrainer : IDisposable
{
    public const string ModelFolder = RunLayout.ModelFolder, ValueFolder = RunLayout.ValueFolder, RolloutsFile = "rollouts.jsonl";

    private readonly CausalLM _policy, _reference;
    private readonly ValueModel? _value;
    private readonly TextTokenizer _tokenizer;
    private readonly RewardSource _reward;
    private readonly IReadOnlyList<string> _prompts;
    private readonly IReadOnlyList<int[]> _promptIds;
    private readonly AdamW _optimizer;
    private readonly List<Parameter> _params;
    private readonly PolicyLossFunction _policyLoss;
    private readonly OnlineRlCheckpoints _checkpoints;
    private KlController _kl;

    /// <param name="value">The critic; required exactly when the estimator needs values (GAE).</param>
    /// <param name="prompts">Text prompts, encoded once (BOS per the tokenizer); generation then reads token ids only.</param>
    public OnlineRlTrainer(CausalLM policy, CausalLM reference, ValueModel? value, TextTokenizer tokenizer, RewardSource reward,
        IReadOnlyList<string> prompts, OnlineRlOptions options)
    {
        options.Validate();
        if (prompts.Count == 0) throw new FineAlignException($"{options.Name} needs at least one prompt");
        if (options.UsesCritic && value is null) throw new FineAlignException($"the '{options.Advantage}' estimator needs a value model");
        if (!options.UsesCritic && value is not null) throw new FineAlignException($"the '{options.Advantage}' estimator uses no value model; pass none");
        _policy = policy; _reference = reference; _value = value; _tokenizer = tokenizer; _reward = reward; _prompts = prompts;
        _promptIds = prompts.Select((p, i) => TextGenerator.EncodePrompt(tokenizer, p, i)).ToList();
        Options = options;
        WeightCopy.Freeze(reference);
        var all = value is null ? policy.parameters() : policy.parameters().Concat(value.parameters());
        _params = all.Where(p => p.requires_grad).Distinct().ToList();
        _optimizer = optim.AdamW(_params, options.LearningRate, weight_decay: 0.0);
        _policyLoss = PolicyLosses.Get(options.PolicyLoss);
        _kl = options.KlTarget is double target ? new AdaptiveKlController(options.KlCoef, target, options.KlHorizon) : new FixedKlController(options.KlCoef);
        _checkpoints = new OnlineRlCheckpoints(options, policy, value, tokenizer, _optimizer);
        Rollouts = new LocalRolloutEngine(policy, tokenizer);
    }

    public OnlineRlOptions Options { get; }
    /// <summary>Where rollouts come from; the local KV-cache sampler over the policy by default.</summary>
    public IRolloutEngine Rollouts { get; init; }
    /// <summary>
    /// With a <see cref="RemoteRolloutEngine"/>: after each step's updates write the policy to the shared folder and have
    /// the servers reload it, so the next rollout samples from the current weights (logged lag 0).
    /// </summary>
    public bool SyncRolloutWeights { get; init; }
    /// <summary>
    /// Each prompt's dataset columns (the other fields of its row in the prompt file, aligned with the prompts), handed to
    /// the reward with every response of that prompt; required when the reward reads columns (<see cref="RewardSource.Columns"/>).
    /// </summary>
    public IReadOnlyList<IReadOnlyDictionary<string, string>>? PromptColumns { get; init; }
    /// <summary>Optional ground truth logged as <c>env/true_reward</c> (mean over the rollout): (prompt, response) → score.</summary>
    public Func<string, string, double>? TrueReward { get; init; }
    public IProgress<ProgressUpdate>? Progress { get; init; }
    /// <summary>
    /// Optional periodic held-out evaluation: step → <c>eval/*</c> scalars, called before the first step (step 0, fresh runs),
    /// every <see cref="EvalSteps"/> steps and after the last. A hook so Trainers need not know Evaluation (the CLI builds it).
    /// </summary>
    public Func<int, IReadOnlyDictionary<string, double>>? Evaluate { get; init; }
    /// <summary>Steps between <see cref="Evaluate"/> calls (0 = only at step 0 and at the end).</summary>
    public int EvalSteps { get; init; }
    public bool WriteTensorBoard { get; init; } = true;
    /// <summary>Current β of the reward's KL penalty.</summary>
    public double KlCoef => _kl.Value;
    /// <summary>Wall seconds of the last <see cref="Step"/> by phase: "generation", "scoring" (forwards, reward, advantages), "update".</summary>
    public IReadOnlyDictionary<string, double> LastStepSeconds => _phaseSeconds;
    private readonly Dictionary<string, double> _phaseSeconds = new();
    private IReadOnlyList<RolloutSample>? _lastSamples;
    private IReadOnlyList<int> _lastRowPrompts = [];

    /// <summary>Resumes or refuses another run's checkpoints, runs the steps, logs, checkpoints, then saves the final models.</summary>
    public OnlineRlResult Train(CancellationToken cancellation = default)
    {
        var o = Options;
        if (_reward.Columns.Count > 0 && PromptColumns is null)
            throw new FineAlignException($"reward '{_reward.Name}' reads the dataset column(s) {string.Join(", ", _reward.Columns.Select(c => $"'{c}'"))}: give --prompts FILE whose rows have them");
        if (PromptColumns is not null && PromptColumns.Count != _prompts.Count)
            throw new FineAlignException($"{PromptColumns.Count} rows of dataset columns for {_prompts.Count} prompts");
        Directory.CreateDirectory(o.OutputDir);
        CheckpointStore.CleanTemporary(o.OutputDir);
        int start = 0;
        var history = new List<Dictionary<string, double>>();
        string? last = null;
        if (o.Resume && CheckpointStore.Latest(o.OutputDir) is string ck)
        {
            var state = _checkpoints.Load(ck, history);
            start = state.Step;
            if (_kl is AdaptiveKlController a && state.KlCoef is double beta) _kl = new AdaptiveKlController(beta, a.Target, a.Horizon);
            RewardNormalization.Restore(_reward, state.RewardStats, ck);   // the running reward statistics continue where they were
            last = ck;
        }
        else if (CheckpointStore.Latest(o.OutputDir) is string existing)
            throw new FineAlignException($"output folder '{o.OutputDir}' already holds {Path.GetFileName(existing)}; resume it (--resume) or choose another --out");
        var logger = new MetricsLogger(o.OutputDir, start, WriteTensorBoard);
        string rolloutsPath = Path.Combine(o.OutputDir, RolloutsFile);
        if (o.SaveRollouts) RolloutLog.Trim(rolloutsPath, start);

        if (Evaluate is not null && start == 0)
        {
            var entry = new Dictionary<string, double> { ["step"] = 0 };
            foreach (var kv in Evaluate(0)) entry[kv.Key] = kv.Value;
            logger.Log(entry);
            history.Add(entry);
        }
        var clock = Stopwatch.StartNew();
        int current = start;
        while (current < o.Steps && !cancellation.IsCancellationRequested)
        {
            current++;
            var metrics = Step(current, o.SaveRollouts ? rolloutsPath : null);
            metrics["episode"] = (double)current * o.BatchSize;
            metrics["eps"] = (double)(current - start) * o.BatchSize / Math.Max(1e-9, clock.Elapsed.TotalSeconds); // episodes per second (this process)
            bool evalDue = Evaluate is not null && ((EvalSteps > 0 && current % EvalSteps == 0) || current == o.Steps);
            if (evalDue)
                foreach (var kv in Evaluate!(current)) metrics[kv.Key] = kv.Value;
            if (evalDue || current % o.LoggingSteps == 0 || current == o.Steps)
            {
                var entry = new Dictionary<string, double> { ["step"] = current };
                foreach (var kv in metrics) entry[kv.Key] = kv.Value;
                logger.Log(entry);
                history.Add(entry);
            }
            Progress?.Report(OnlineRlMetrics.Describe(o, current, metrics));
            if ((o.SaveSteps > 0 && current % o.SaveSteps == 0) || current == o.Steps) last = _checkpoints.Save(current, _kl.Value, history, RewardNormalization.Save(_reward));
        }
        if (last is null || !last.EndsWith($"checkpoint-{current}", StringComparison.Ordinal)) last = _checkpoints.Save(current, _kl.Value, history, RewardNormalization.Save(_reward));
        bool done = current >= o.Steps;
        if (done) _checkpoints.SaveModels(o.OutputDir);
        return new OnlineRlResult(current, history, last, done);
    }

    /// <summary>Indices into the prompt list of rollout batch <paramref name="step"/> (1-based), one per group: a seeded permutation per pass.</summary>
    public IReadOnlyList<int> PromptIndicesFor(int step)
    {
        int n = _prompts.Count, groups = Options.BatchSize / Options.NumGenerations;
        var list = new int[groups];
        for (int i = 0; i < groups; i++)
        {
            long k = (long)(step - 1) * groups + i;
            var perm = DataOrder.Permutation(n, Options.Seed, (int)(k / n));
            list[i] = perm[k % n];
        }
        return list;
    }

    /// <summary>The prompts of rollout batch <paramref name="step"/>, each repeated G times in a row (row i belongs to group i / G).</summary>
    public IReadOnlyList<string> PromptsFor(int step) =>
        PromptIndicesFor(step).SelectMany(i => Enumerable.Repeat(_prompts[i], Options.NumGenerations)).ToList();

    /// <summary>Samples the responses of rollout batch <paramref name="step"/> with the current policy.</summary>
    public RolloutBatch Rollout(int step)
    {
        var o = Options;
        var groups = PromptIndicesFor(step);
        var request = new RolloutRequest
        {
            PromptIds = groups.Select(i => _promptIds[i]).ToList(), SamplesPerPrompt = o.NumGenerations, MaxNewTokens = o.MaxNewTokens,
            Temperature = o.Temperature, TopP = o.TopP, Seed = unchecked(o.Seed * 1_000_003L + step), StopTokenIds = o.StopTokenIds is { Count: > 0 } stop ? _policy.Config.EosTokenIds.Concat(stop).Distinct().ToArray() : _policy.Config.EosTokenIds,
        };
        var samples = Rollouts.Generate(request);
        _lastSamples = samples;
        if (samples.Count != request.Count)
            throw new FineAlignException($"the rollout engine returned {samples.Count} samples for {request.Count} requested ({o.StepNoun} {step})");
        var rows = groups.SelectMany(i => Enumerable.Repeat(i, o.NumGenerations)).ToList();
        _lastRowPrompts = rows;
        return RolloutBatch.From(samples, rows.Select(i => _promptIds[i]).ToList(), rows.Select(i => _prompts[i]).ToList(),
            samples.Select(s => _tokenizer.Decode(s.ResponseIds)).ToList(), _tokenizer.PaddingId, PolicyDevice);
    }

    /// <summary>Where the policy lives: the rollout tensors are built there once per step (issue #15's device seam).</summary>
    private Device PolicyDevice => _policy.parameters().First().device;

    /// <summary>One rollout batch and its updates; returns the TRL-named metrics.</summary>
    public Dictionary<string, double> Step(int step, string? rolloutsPath = null)
    {
        var o = Options;
        using var scope = NewDisposeScope();
        var phase = Stopwatch.StartNew();
        // Generation and scoring see fixed weights: mixed precision casts each fp32 master once for both (closed below).
        using var rolloutCasts = MasterCast.Step();
        using var rollout = Rollout(step);
        _phaseSeconds["generation"] = phase.Elapsed.TotalSeconds;
        phase.Restart();
        var mask = rollout.ResponseMask;
        int b = (int)rollout.BatchSize;

        Tensor oldLogp, refLogp; Tensor? oldValues = null;
        double? serverGap = null;
        int? weightsLag = Rollouts is RemoteRolloutEngine remote ? step - 1 - remote.WeightsVersion : null;
        using (no_grad())
        {
            _policy.eval(); _value?.eval();
            // Hidden states only; the LM head runs chunked at the response positions (no [B, P + T, vocab] logits).
            var (hidden, values) = Forward(rollout.InputIds, rollout.AttentionMask);
            oldLogp = rollout.ScoreResponses(_policy, hidden, o.Temperature).LogProbs;
            if (values is not null) oldValues = Masked.ZeroPadding(rollout.ResponseValues(values).to(float32), mask);
            using (var refScope = NewDisposeScope())
                refLogp = rollout.ScoreResponses(_reference, _reference.ForwardHidden(rollout.InputIds, rollout.AttentionMask), o.Temperature)
                    .LogProbs.MoveToOuterDisposeScope();
            if (Rollouts is RemoteRolloutEngine) // servers report temperature-1 log-probs: compare like with like
                serverGap = RemoteRolloutMetrics.LogProbGap(_lastSamples!, o.Temperature == 1.0 ? oldLogp : rollout.ScoreResponses(_policy, hidden, 1.0).LogProbs);
        }

        TokenRewards task;
        try
        {
            task = _reward.Compute(new RewardBatch(rollout.ResponseIds, mask, null, rollout.Prompts, rollout.Responses,
                PromptColumns is null ? null : _lastRowPrompts.Select(i => PromptColumns[i]).ToList()));
        }
        catch (FineAlignException ex)
        {
            throw new FineAlignException($"{ex.Message} ({o.StepNoun} {step})", ex);
        }
        if (!Devices.Same(task.Values, mask))
        {
            // A host-side reward source (text scorers, remote rewards): its [B, T] result joins the rollout on the device once.
            var onDevice = new TokenRewards(task.Values.to(mask.device), task.Mask.to(mask.device), task.Metrics);
            task.Dispose();
            task = onDevice;
        }
        using var _task = task;
        var kl = Kl.PerToken(oldLogp, refLogp, mask, o.KlEstimator);
        double beta = _kl.Value;
        var eos = tensor(rollout.EndedWithEos, device: rollout.ResponseMask.device);
        var shaped = Ppo.ShapedRewards(task.Values, kl, mask, beta, o.MissingEosPenalty is null ? null : eos, o.MissingEosPenalty ?? 0);
        var est = o.Estimator.Estimate(new AdvantageInput
        {
            Rewards = shaped, Mask = mask, Values = oldValues, GroupSize = o.NumGenerations, Gamma = o.Gamma, Lambda = o.Lambda,
            ScaleRewards = o.ScaleRewards, Whiten = o.WhitenAdvantages,
        });
        RewardSource.CheckFinite($"{o.Name} advantages", est.Advantages, mask);

        var sample = new RolloutStats(rollout, task, kl, shaped, oldLogp, refLogp, beta, eos);
        var (m, scores) = OnlineRlMetrics.Rollout(o, sample, TrueReward);
        if (rolloutsPath is not null) RolloutLog.Append(rolloutsPath, step, o.NumGenerations, sample, scores, est.Advantages, TrueReward);
        rolloutCasts.Dispose();                                    // the updates below change the masters
        _phaseSeconds["scoring"] = phase.Elapsed.TotalSeconds;   // item() calls above have synchronised
        phase.Restart();

        // Epochs × mini-batches; the order comes from (seed, step, epoch), so resume replays it. The global RNG (LoRA
        // dropout draws from it) is seeded from (seed, step) too: a resumed run, or the same run in another process,
        // draws the same masks without a saved RNG state.
        torch.manual_seed(unchecked(o.Seed * 1_000_033L + step * 7_919L));
        _policy.train(); _value?.train();
        int mb = o.EffectiveMiniBatch;
        var update = new OnlineRlMetrics.UpdateStats(o);
        for (int epoch = 0; epoch < o.Epochs; epoch++)
        {
            var order = mb == b ? Enumerable.Range(0, b).ToArray() : DataOrder.Permutation(b, unchecked(o.Seed * 31 + step), epoch);
            for (int s = 0; s < b; s += mb)
            {
                using var inner = NewDisposeScope();
                using var casts = MasterCast.Step();               // one cast per master for this mini-batch's passes
                var idx = tensor(order.Skip(s).Take(mb).Select(i => (long)i).ToArray(), device: mask.device);
                var mk = mask.index_select(0, idx);
                var (hidden, values) = Forward(rollout.InputIds.index_select(0, idx), rollout.AttentionMask.index_select(0, idx));
                // PPO's entropy metric comes from the same chunks of logits as the log-probs (forward only, detached).
                var (logp, entropy) = rollout.ScoreResponses(_policy, hidden, o.Temperature, idx, entropy: o.UsesCritic);
                var old = oldLogp.index_select(0, idx);
                var adv = est.Advantages.index_select(0, idx);
                var policyLoss = _policyLoss(new PolicyLossInput
                {
                    LogProbs = logp, OldLogProbs = old, Advantages = adv, Mask = mk, Clip = o.ClipRange,
                    RefLogProbs = o.Beta > 0 ? refLogp.index_select(0, idx) : null, KlBeta = o.Beta,
                    MaxLength = o.MaxNewTokens, // Dr. GRPO: constant = max completion length
                });
                ValueLossResult? valueLoss = null;
                var loss = policyLoss;
                if (values is not null)
                {
                    var vpred = rollout.ResponseValues(values).to(float32);
                    valueLoss = Ppo.ValueLoss(vpred, oldValues!.index_select(0, idx), est.Returns.index_select(0, idx), mk, o.ClipRangeValue);
                    loss = policyLoss + o.VfCoef * valueLoss.Loss;
                }
                double lossValue = loss.item<float>();
                if (!double.IsFinite(lossValue))
                    throw new FineAlignException($"{o.Name} loss is not finite at {o.StepNoun} {step}; lower the learning rate (now {o.LearningRate:G3})");
                _optimizer.zero_grad();
                loss.backward();
                casts.Dispose();                                   // before the step changes the masters
                if (o.MaxGradNorm > 0) nn.utils.clip_grad_norm_(_params, o.MaxGradNorm);
                _optimizer.step();
                update.Add(entropy, logp, old, adv, mk, lossValue, policyLoss, valueLoss);
            }
        }
        _optimizer.zero_grad();
        _phaseSeconds["update"] = phase.Elapsed.TotalSeconds;
        update.WriteTo(m);
        _kl.Update(m["objective/kl"], b);
        if (serverGap is double gap) m["rollout/logprob_gap"] = gap;
        if (weightsLag is int lag) m["rollout/weights_lag_steps"] = lag;
        if (SyncRolloutWeights && Rollouts is RemoteRolloutEngine sync)
        {
            phase.Restart();
            sync.SyncWeights(_policy, _tokenizer, step);
            _phaseSeconds["sync"] = phase.Elapsed.TotalSeconds;
            m["rollout/sync_seconds"] = _phaseSeconds["sync"];
        }
        return m;
    }

    // The policy's final hidden states and, with a critic, values: one trunk pass when the value head shares it.
    private (Tensor Hidden, Tensor? Values) Forward(Tensor ids, Tensor mask)
    {
        if (_value is null) return (_policy.ForwardHidden(ids, mask), null);
        var (hidden, values) = _value.ForwardHidden(_policy, ids, mask);
        return (hidden, values);
    }

    public void Dispose() => _optimizer.Dispose();
}
