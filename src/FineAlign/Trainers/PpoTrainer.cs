using System.Diagnostics;
using System.Text.Json;
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

/// <summary>PPO settings; names and defaults follow TRL's PPOConfig where it has them.</summary>
public sealed record PpoOptions
{
    public string OutputDir { get; init; } = "runs/ppo";
    public int Seed { get; init; } = 42;
    /// <summary>Rollout batches (each: generate, score, then <see cref="PpoEpochs"/> passes of mini-batch updates).</summary>
    public int Steps { get; init; } = 50;
    public int RolloutBatchSize { get; init; } = 16;
    public int MiniBatchSize { get; init; } = 8;
    public int PpoEpochs { get; init; } = 4;
    public double LearningRate { get; init; } = 3e-6;
    public double MaxGradNorm { get; init; } = 1.0;
    public double Gamma { get; init; } = 1.0;
    public double Lambda { get; init; } = 0.95;
    public double ClipRange { get; init; } = 0.2;
    public double ClipRangeValue { get; init; } = 0.2;
    public double VfCoef { get; init; } = 0.1;
    public double KlCoef { get; init; } = 0.05;
    public KlEstimator KlEstimator { get; init; } = KlEstimator.K1;
    /// <summary>Adaptive β (Ziegler et al.) toward this KL target per sequence; null = fixed β.</summary>
    public double? KlTarget { get; init; }
    public double KlHorizon { get; init; } = 10000;
    public bool WhitenAdvantages { get; init; } = true;
    /// <summary>Subtracted from the score of responses cut by the length limit (TRL missing_eos_penalty); null = none.</summary>
    public double? MissingEosPenalty { get; init; }
    public int MaxNewTokens { get; init; } = 64;
    /// <summary>Token ids that also end a response besides the model's EOS (a chat template's end-of-turn token).</summary>
    public IReadOnlyList<int>? StopTokenIds { get; init; }
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    public int LoggingSteps { get; init; } = 1;
    /// <summary>Checkpoint every N rollout batches (and at the end); 0 = only at the end.</summary>
    public int SaveSteps { get; init; }
    public int? SaveTotalLimit { get; init; } = 2;
    /// <summary>Write every rollout (prompt, response, score, per-token rewards) to rollouts.jsonl.</summary>
    public bool SaveRollouts { get; init; }
    public bool Resume { get; init; }

    public void Validate()
    {
        if (Steps < 1) throw new FineAlignException($"steps must be at least 1 (got {Steps})");
        if (RolloutBatchSize < 1 || MiniBatchSize < 1) throw new FineAlignException("rollout and mini-batch sizes must be at least 1");
        if (RolloutBatchSize % MiniBatchSize != 0)
            throw new FineAlignException($"rollout batch size {RolloutBatchSize} must be a multiple of the mini-batch size {MiniBatchSize}");
        if (PpoEpochs < 1) throw new FineAlignException($"ppo epochs must be at least 1 (got {PpoEpochs})");
        if (!(LearningRate > 0)) throw new FineAlignException($"learning rate must be positive (got {LearningRate})");
        if (!(Temperature > 0)) throw new FineAlignException($"PPO samples at a temperature > 0 (got {Temperature})");
        if (MaxNewTokens < 1) throw new FineAlignException($"max new tokens must be at least 1 (got {MaxNewTokens})");
        if (KlCoef < 0) throw new FineAlignException($"KL coefficient must be ≥ 0 (got {KlCoef})");
    }
}

/// <summary>
/// The value function: a separate value model (LM trunk + 1-output token head, <see cref="ScoredLM"/>) or a
/// linear head on the policy's own final hidden states (shared trunk: cheaper, but value gradients reach the policy).
/// </summary>
public sealed class PpoValueModel : nn.Module
{
    private readonly ScoredLM? separate;
    private readonly Linear? head;

    private PpoValueModel(ScoredLM? separate, Linear? head) : base(nameof(PpoValueModel))
    {
        this.separate = separate; this.head = head;
        RegisterComponents();
    }

    public static PpoValueModel Separate(ScoredLM model)
    {
        if (model.Kind != HeadKind.Token || model.NumLabels != 1) throw new FineAlignException("a value model needs a 1-output token head");
        return new PpoValueModel(model, null);
    }

    public static PpoValueModel Shared(CausalLM policy, long seed)
    {
        var h = nn.Linear(policy.Config.HiddenSize, 1);
        using (no_grad())
        {
            h.weight!.normal_(0, 1.0 / Math.Sqrt(policy.Config.HiddenSize + 1), new torch.Generator((ulong)seed));
            h.bias!.zero_();
        }
        return new PpoValueModel(null, h);
    }

    public bool IsShared => head is not null;
    public ScoredLM? SeparateModel => separate;

    /// <summary>Policy logits and values [B, L] at every position; one trunk pass when shared.</summary>
    public (Tensor Logits, Tensor Values) Forward(CausalLM policy, Tensor ids, Tensor mask)
    {
        if (head is not null)
        {
            var h = policy.ForwardHidden(ids, mask);
            return (policy.LmHead(h), head.forward(h).squeeze(-1));
        }
        return (policy.Forward(ids, mask), separate!.TokenScores(ids, mask).squeeze(-1));
    }

    public void Save(string folder, TextTokenizer tokenizer)
    {
        if (separate is not null) { separate.Save(folder, tokenizer); return; }
        Directory.CreateDirectory(folder);
        SafeTensors.Save(Path.Combine(folder, "value_head.safetensors"),
            new[] { new KeyValuePair<string, Tensor>("score.weight", head!.weight!), new("score.bias", head.bias!) });
    }

    public void LoadFrom(string folder)
    {
        using var _ = no_grad();
        if (separate is not null) { TlcrTrainer.LoadInto(separate, folder); return; }
        string path = Path.Combine(folder, "value_head.safetensors");
        if (!File.Exists(path)) throw new FineAlignException($"{path}: the shared-trunk value head is missing");
        var tensors = SafeTensors.Load(path, float32);
        try
        {
            foreach (var (name, p) in new[] { ("score.weight", head!.weight!), ("score.bias", head.bias!) })
            {
                if (!tensors.TryGetValue(name, out var t) || !t.shape.SequenceEqual(p.shape))
                    throw new FineAlignException($"{path}: tensor '{name}' is missing or has the wrong shape");
                p.copy_(t);
            }
        }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
    }
}

/// <summary>One rollout batch: prompt (left-padded, width P) + response (right-padded, width T) in one [B, P + T] input.</summary>
public sealed class PpoRollout : IDisposable
{
    public required Tensor InputIds { get; init; }
    public required Tensor AttentionMask { get; init; }
    public required Tensor ResponseIds { get; init; }
    public required Tensor ResponseMask { get; init; }
    public required int PromptWidth { get; init; }
    public required string[] Prompts { get; init; }
    public required string[] Responses { get; init; }
    public required bool[] EndedWithEos { get; init; }
    public long BatchSize => ResponseIds.shape[0];

    public static PpoRollout From(IReadOnlyList<GeneratedSequence> gen, IReadOnlyList<string> prompts, int pad, ICollection<int> eos)
    {
        int b = gen.Count, p = gen.Max(g => g.PromptIds.Length), t = Math.Max(1, gen.Max(g => g.Tokens.Length));
        var ids = new long[b * (p + t)]; var mask = new long[b * (p + t)];
        var rids = new long[b * t]; var rmask = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            var g = gen[i];
            int off = p - g.PromptIds.Length;
            for (int j = 0; j < p + t; j++) ids[i * (p + t) + j] = pad;
            for (int j = 0; j < g.PromptIds.Length; j++) { ids[i * (p + t) + off + j] = g.PromptIds[j]; mask[i * (p + t) + off + j] = 1; }
            for (int j = 0; j < t; j++) rids[i * t + j] = pad;
            for (int j = 0; j < g.Tokens.Length; j++)
            {
                ids[i * (p + t) + p + j] = g.Tokens[j]; mask[i * (p + t) + p + j] = 1;
                rids[i * t + j] = g.Tokens[j]; rmask[i * t + j] = 1;
            }
        }
        return new PpoRollout
        {
            InputIds = tensor(ids, new long[] { b, p + t }), AttentionMask = tensor(mask, new long[] { b, p + t }),
            ResponseIds = tensor(rids, new long[] { b, t }), ResponseMask = tensor(rmask, new long[] { b, t }),
            PromptWidth = p, Prompts = prompts.ToArray(), Responses = gen.Select(g => g.Text).ToArray(),
            EndedWithEos = gen.Select(g => g.FinishReason == FinishReason.Eos).ToArray(),
        };
    }

    /// <summary>Log-probs [B, T] of the response tokens under logits [B, P + T, V] at <paramref name="temperature"/>.</summary>
    public Tensor ResponseLogProbs(Tensor logits, double temperature)
    {
        using var scope = NewDisposeScope();
        long t = ResponseIds.shape[1];
        var l = logits.narrow(1, PromptWidth - 1, t).to(float32);
        if (temperature != 1.0) l = l / temperature;
        return Gather(l, ResponseIds).MoveToOuterDisposeScope();
    }

    /// <summary>log_softmax(logits)[b, t, ids[b, t]], [B, T].</summary>
    public static Tensor Gather(Tensor logits, Tensor ids)
    {
        using var scope = NewDisposeScope();
        return logits.log_softmax(-1).gather(-1, ids.to(int64).unsqueeze(-1)).squeeze(-1).MoveToOuterDisposeScope();
    }

    /// <summary>Values [B, T] of the states before each response token.</summary>
    public Tensor ResponseValues(Tensor values) => values.narrow(1, PromptWidth - 1, ResponseIds.shape[1]);

    public void Dispose()
    {
        InputIds.Dispose(); AttentionMask.Dispose(); ResponseIds.Dispose(); ResponseMask.Dispose();
    }
}

/// <summary>The outcome of <see cref="PpoTrainer.Train"/>.</summary>
public sealed record PpoResult(int Steps, IReadOnlyList<Dictionary<string, double>> LogHistory, string? LastCheckpoint, bool Completed);

/// <summary>
/// PPO for RLHF with dense token rewards: rollout (batched KV-cache sampling) → task rewards from a
/// <see cref="RewardSource"/> → reference log-probs and values → KL shaping + GAE → several epochs of clipped
/// policy + value updates on mini-batches (losses in <see cref="Ppo"/>). Metrics use TRL's names. Checkpoints
/// (policy and value folders, optimizer, state) are atomic; sampling seeds and mini-batch orders derive from
/// (seed, step), so a resumed run continues the same sequence of rollouts.
/// </summary>
public sealed class PpoTrainer : IDisposable
{
    public const string PolicyFolder = "policy", ValueFolder = "value", RolloutsFile = "rollouts.jsonl", StateFile = "ppo_state.json";

    private readonly CausalLM _policy, _reference;
    private readonly PpoValueModel _value;
    private readonly TextTokenizer _tokenizer;
    private readonly RewardSource _reward;
    private readonly IReadOnlyList<string> _prompts;
    private readonly AdamW _optimizer;
    private readonly List<Parameter> _params;
    private KlController _kl;

    public PpoTrainer(CausalLM policy, CausalLM reference, PpoValueModel value, TextTokenizer tokenizer, RewardSource reward,
        IReadOnlyList<string> prompts, PpoOptions options)
    {
        options.Validate();
        if (prompts.Count == 0) throw new FineAlignException("PPO needs at least one prompt");
        _policy = policy; _reference = reference; _value = value; _tokenizer = tokenizer; _reward = reward; _prompts = prompts;
        Options = options;
        foreach (var p in reference.parameters()) p.requires_grad = false;
        reference.eval();
        _params = policy.parameters().Concat(value.parameters()).Where(p => p.requires_grad).Distinct().ToList();
        _optimizer = optim.AdamW(_params, options.LearningRate, weight_decay: 0.0);
        _kl = options.KlTarget is double target ? new AdaptiveKlController(options.KlCoef, target, options.KlHorizon) : new FixedKlController(options.KlCoef);
    }

    public PpoOptions Options { get; }
    /// <summary>Optional ground truth logged as <c>env/true_reward</c> (mean over the rollout): (prompt, response) → score.</summary>
    public Func<string, string, double>? TrueReward { get; init; }
    public IProgress<ProgressUpdate>? Progress { get; init; }
    public bool WriteTensorBoard { get; init; } = true;
    /// <summary>Current β.</summary>
    public double KlCoef => _kl.Value;
    /// <summary>Wall seconds of the last <see cref="Step"/> by phase: "generation", "scoring" (forwards, reward, GAE), "update".</summary>
    public IReadOnlyDictionary<string, double> LastStepSeconds => _phaseSeconds;
    private readonly Dictionary<string, double> _phaseSeconds = new();

    public PpoResult Train(CancellationToken cancellation = default)
    {
        var o = Options;
        var r = OnlineRlLoop.Run(
            new OnlineRlLoop.Settings(o.OutputDir, o.Steps, o.RolloutBatchSize, o.LoggingSteps, o.SaveSteps, o.Resume, o.SaveRollouts, RolloutsFile, WriteTensorBoard),
            Step, LoadCheckpoint, SaveCheckpoint,
            (step, m) => new ProgressUpdate("ppo", step, o.Steps, m["loss/policy_avg"], new Dictionary<string, double>
            {
                ["objective/scores"] = m["objective/scores"], ["objective/kl"] = m["objective/kl"],
            }),
            Progress,
            () =>
            {
                ModelIO.Save(_policy, Path.Combine(o.OutputDir, PolicyFolder), _tokenizer);
                _value.Save(Path.Combine(o.OutputDir, ValueFolder), _tokenizer);
            },
            cancellation);
        return new PpoResult(r.Steps, r.LogHistory, r.LastCheckpoint, r.Completed);
    }

    /// <summary>Prompts of rollout batch <paramref name="step"/> (1-based): a seeded permutation per pass over the prompts.</summary>
    public IReadOnlyList<string> PromptsFor(int step)
    {
        int n = _prompts.Count, b = Options.RolloutBatchSize;
        var list = new string[b];
        for (int i = 0; i < b; i++)
        {
            long k = (long)(step - 1) * b + i;
            var perm = DataOrder.Permutation(n, Options.Seed, (int)(k / n));
            list[i] = _prompts[perm[k % n]];
        }
        return list;
    }

    /// <summary>Samples responses for <paramref name="prompts"/> with the current policy.</summary>
    public PpoRollout Rollout(IReadOnlyList<string> prompts, long seed)
    {
        var gen = TextGenerator.Generate(_policy, _tokenizer, prompts, new GenerationOptions
        {
            MaxNewTokens = Options.MaxNewTokens, DoSample = true, Temperature = Options.Temperature, TopP = Options.TopP, Seed = seed,
            EosTokenIds = Options.StopTokenIds is { Count: > 0 } stop ? _policy.Config.EosTokenIds.Concat(stop).Distinct().ToArray() : null,
        });
        return PpoRollout.From(gen, prompts, _tokenizer.PaddingId, _policy.Config.EosTokenIds);
    }

    /// <summary>One rollout batch and its PPO updates; returns the TRL-named metrics.</summary>
    public Dictionary<string, double> Step(int step, string? rolloutsPath = null)
    {
        var o = Options;
        using var scope = NewDisposeScope();
        var phase = Stopwatch.StartNew();
        using var rollout = Rollout(PromptsFor(step), unchecked(o.Seed * 1_000_003L + step));
        _phaseSeconds["generation"] = phase.Elapsed.TotalSeconds;
        phase.Restart();
        var mask = rollout.ResponseMask;
        int b = (int)rollout.BatchSize;

        Tensor oldLogp, refLogp, oldValues;
        using (no_grad())
        {
            _policy.eval(); _value.eval();
            var (logits, values) = _value.Forward(_policy, rollout.InputIds, rollout.AttentionMask);
            oldLogp = rollout.ResponseLogProbs(logits, o.Temperature);
            oldValues = Ppo.ZeroPadding(rollout.ResponseValues(values).to(float32), mask);
            refLogp = rollout.ResponseLogProbs(_reference.Forward(rollout.InputIds, rollout.AttentionMask), o.Temperature);
        }

        TokenRewards task;
        try
        {
            task = _reward.Compute(new RewardBatch(rollout.ResponseIds, mask, null, rollout.Prompts, rollout.Responses));
        }
        catch (FineAlignException ex)
        {
            throw new FineAlignException($"{ex.Message} (rollout batch {step})", ex);
        }
        var kl = Ppo.KlPerToken(oldLogp, refLogp, mask, o.KlEstimator);
        double beta = _kl.Value;
        var eos = tensor(rollout.EndedWithEos);
        var rewards = Ppo.ShapedRewards(task.Values, kl, mask, beta, o.MissingEosPenalty is null ? null : eos, o.MissingEosPenalty ?? 0);
        var (adv, returns) = Ppo.Gae(rewards, oldValues, mask, o.Gamma, o.Lambda);
        if (o.WhitenAdvantages) adv = Ppo.Whiten(adv, mask);

        var m = new Dictionary<string, double>();
        var scores = (task.Values * mask).sum(1);
        if (o.MissingEosPenalty is double pen) scores = scores - eos.logical_not().to(float32) * pen;
        double klSum = (kl * mask).sum(1).mean().item<float>();
        double scoreMean = scores.mean().item<float>();
        m["objective/kl"] = klSum;
        m["objective/entropy"] = (-oldLogp * mask).sum(1).mean().item<float>();
        m["objective/non_score_reward"] = -beta * klSum;
        m["objective/rlhf_reward"] = scoreMean - beta * klSum;
        m["objective/scores"] = scoreMean;
        m["objective/kl_coef"] = beta;
        m["val/num_eos_tokens"] = rollout.EndedWithEos.Count(e => e);
        m["val/mean_response_length"] = mask.sum(1).mean().item<float>();
        foreach (var kv in task.Metrics) m[kv.Key] = kv.Value;
        if (TrueReward is not null)
            m["env/true_reward"] = Enumerable.Range(0, b).Average(i => TrueReward(rollout.Prompts[i], rollout.Responses[i]));
        if (rolloutsPath is not null) WriteRollouts(rolloutsPath, step, rollout, task.Values, scores, kl);

        _phaseSeconds["scoring"] = phase.Elapsed.TotalSeconds;   // item() calls above have synchronised
        phase.Restart();
        // PPO epochs × mini-batches (order from (seed, step, epoch), so resume replays it).
        _policy.train(); _value.train();
        double pgSum = 0, vfSum = 0, clipSum = 0, vclipSum = 0, akSum = 0, entSum = 0, ratioSum = 0; int updates = 0;
        for (int epoch = 0; epoch < o.PpoEpochs; epoch++)
        {
            var order = DataOrder.Permutation(b, unchecked(o.Seed * 31 + step), epoch);
            for (int s = 0; s < b; s += o.MiniBatchSize)
            {
                using var inner = NewDisposeScope();
                var idx = tensor(order.Skip(s).Take(o.MiniBatchSize).Select(i => (long)i).ToArray());
                var mb = mask.index_select(0, idx);
                var (logits, values) = _value.Forward(_policy, rollout.InputIds.index_select(0, idx), rollout.AttentionMask.index_select(0, idx));
                var sub = new SubRollout(rollout, idx);
                var logp = sub.LogProbs(logits, o.Temperature);
                var vpred = rollout.ResponseValues(values).to(float32);
                var pl = Ppo.PolicyLoss(logp, oldLogp.index_select(0, idx), adv.index_select(0, idx), mb, o.ClipRange);
                var vl = Ppo.ValueLoss(vpred, oldValues.index_select(0, idx), returns.index_select(0, idx), mb, o.ClipRangeValue);
                var loss = pl.Loss + o.VfCoef * vl.Loss;
                double lossValue = loss.item<float>();
                if (!double.IsFinite(lossValue))
                    throw new FineAlignException($"PPO loss is not finite at rollout batch {step}; lower the learning rate (now {o.LearningRate:G3})");
                _optimizer.zero_grad();
                loss.backward();
                if (o.MaxGradNorm > 0) nn.utils.clip_grad_norm_(_params, o.MaxGradNorm);
                _optimizer.step();
                using (no_grad())
                {
                    var ent = Ppo.Entropy(logits.narrow(1, rollout.PromptWidth - 1, mb.shape[1]) / o.Temperature, mb);
                    entSum += Ppo.MaskedMean(ent, mb).item<float>();
                    ratioSum += Ppo.MaskedMean((logp.detach() - oldLogp.index_select(0, idx)).exp(), mb).item<float>();
                }
                pgSum += pl.Loss.item<float>(); vfSum += vl.Loss.item<float>();
                clipSum += pl.ClipFraction; vclipSum += vl.ClipFraction; akSum += pl.ApproxKl; updates++;
            }
        }
        _optimizer.zero_grad();
        _phaseSeconds["update"] = phase.Elapsed.TotalSeconds;
        m["policy/approxkl_avg"] = akSum / updates;
        m["policy/clipfrac_avg"] = clipSum / updates;
        m["loss/policy_avg"] = pgSum / updates;
        m["loss/value_avg"] = vfSum / updates;
        m["val/clipfrac_avg"] = vclipSum / updates;
        m["policy/entropy_avg"] = entSum / updates;
        m["val/ratio"] = ratioSum / updates;
        m["lr"] = o.LearningRate;
        _kl.Update(klSum, b);
        task.Dispose();
        return m;
    }

    private readonly struct SubRollout(PpoRollout r, Tensor idx)
    {
        public Tensor LogProbs(Tensor logits, double temperature)
        {
            long t = r.ResponseIds.shape[1];
            var l = logits.narrow(1, r.PromptWidth - 1, t).to(float32);
            if (temperature != 1.0) l = l / temperature;
            return PpoRollout.Gather(l, r.ResponseIds.index_select(0, idx));
        }
    }

    private void WriteRollouts(string path, int step, PpoRollout r, Tensor taskRewards, Tensor scores, Tensor kl)
    {
        var rew = taskRewards.contiguous().data<float>().ToArray();
        var sc = scores.contiguous().data<float>().ToArray();
        var klRow = (kl * r.ResponseMask).sum(1).contiguous().data<float>().ToArray();
        var mask = r.ResponseMask.contiguous().data<float>().ToArray();
        var ids = r.ResponseIds.contiguous().data<long>().ToArray();
        int t = (int)r.ResponseIds.shape[1];
        using var w = new StreamWriter(path, append: true);
        for (int i = 0; i < r.Prompts.Length; i++)
        {
            var valid = Enumerable.Range(0, t).Where(j => mask[i * t + j] > 0).ToArray();
            var row = new Dictionary<string, object?>
            {
                ["step"] = step, ["prompt"] = r.Prompts[i], ["response"] = r.Responses[i], ["score"] = sc[i], ["kl"] = klRow[i],
                ["ended_with_eos"] = r.EndedWithEos[i],
                ["response_ids"] = valid.Select(j => ids[i * t + j]).ToArray(),
                ["token_rewards"] = valid.Select(j => rew[i * t + j]).ToArray(),
            };
            if (TrueReward is not null) row["true_reward"] = TrueReward(r.Prompts[i], r.Responses[i]);
            w.WriteLine(JsonSerializer.Serialize(row));
        }
    }

    private sealed record PpoState(int Step, double KlCoef, int Seed, List<Dictionary<string, double>> LogHistory);

    private string SaveCheckpoint(int step, List<Dictionary<string, double>> history) =>
        CheckpointStore.Save(Options.OutputDir, step, dir =>
        {
            ModelIO.Save(_policy, Path.Combine(dir, PolicyFolder), _tokenizer);
            _value.Save(Path.Combine(dir, ValueFolder), _tokenizer);
            _optimizer.save_state_dict(Path.Combine(dir, CheckpointStore.OptimizerFile));
            File.WriteAllText(Path.Combine(dir, StateFile), JsonSerializer.Serialize(new PpoState(step, _kl.Value, Options.Seed, history)));
            // Written last: its presence marks the folder complete.
            new TrainerState { GlobalStep = step, MaxSteps = Options.Steps, Seed = Options.Seed, TorchNumThreads = torch.get_num_threads() }
                .Save(Path.Combine(dir, CheckpointStore.StateFile));
        }, Options.SaveTotalLimit);

    private int LoadCheckpoint(string dir, List<Dictionary<string, double>> history)
    {
        var state = JsonSerializer.Deserialize<PpoState>(File.ReadAllText(Path.Combine(dir, StateFile)))
                    ?? throw new FineAlignException($"{dir}: empty {StateFile}");
        if (state.Seed != Options.Seed)
            throw new FineAlignException($"{dir} was written with seed {state.Seed}, not {Options.Seed}; resume with the same seed");
        ModelIO.LoadInto(_policy, Path.Combine(dir, PolicyFolder));
        _value.LoadFrom(Path.Combine(dir, ValueFolder));
        _optimizer.load_state_dict(Path.Combine(dir, CheckpointStore.OptimizerFile));
        if (_kl is AdaptiveKlController a) _kl = new AdaptiveKlController(state.KlCoef, a.Target, a.Horizon);
        history.AddRange(state.LogHistory);
        return state.Step;
    }

    public void Dispose() => _optimizer.Dispose();
}
