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

/// <summary>Which critic-free advantage the group trainer uses.</summary>
public enum GroupAdvantage
{
    /// <summary>(R − group mean) / scale (Shao et al. 2024).</summary>
    Grpo,
    /// <summary>R − mean of the other G − 1 rewards (Ahmadian et al. 2024).</summary>
    Rloo,
    /// <summary>Per-token reward-to-go with the KL folded in, whitened over the batch (Hu 2025).</summary>
    ReinforcePlusPlus,
}

/// <summary>GRPO / RLOO / REINFORCE++ settings; names and defaults follow TRL's GRPOConfig/RLOOConfig where they exist.</summary>
public sealed record GroupOptions
{
    public string OutputDir { get; init; } = "runs/grpo";
    public int Seed { get; init; } = 42;
    public GroupAdvantage Advantage { get; init; } = GroupAdvantage.Grpo;
    /// <summary>Generation batches (each: sample, score, then <see cref="NumIterations"/> passes of updates).</summary>
    public int Steps { get; init; } = 50;
    /// <summary>Completions per generation batch (= prompts × <see cref="NumGenerations"/>).</summary>
    public int BatchSize { get; init; } = 16;
    /// <summary>G: completions sampled per prompt (TRL num_generations).</summary>
    public int NumGenerations { get; init; } = 4;
    /// <summary>Completions per optimizer step; must divide <see cref="BatchSize"/>. 0 = the whole batch.</summary>
    public int MiniBatchSize { get; init; }
    /// <summary>μ: passes over each generation batch (TRL num_iterations).</summary>
    public int NumIterations { get; init; } = 1;
    public double LearningRate { get; init; } = 1e-6;
    public double MaxGradNorm { get; init; } = 1.0;
    /// <summary>ε of the per-token clipped ratio.</summary>
    public double Epsilon { get; init; } = 0.2;
    /// <summary>GRPO's scale_rewards (ignored by RLOO and REINFORCE++).</summary>
    public RewardScaling ScaleRewards { get; init; } = RewardScaling.Group;
    public LossAggregation LossType { get; init; } = LossAggregation.Grpo;
    /// <summary>β of the k3 KL(π_θ ‖ π_ref) term in the loss (TRL GRPO beta; default 0).</summary>
    public double Beta { get; init; }
    /// <summary>β of the k1 KL penalty folded into the reward (RLOO, REINFORCE++); 0 = none.</summary>
    public double KlCoef { get; init; }
    public int MaxNewTokens { get; init; } = 64;
    /// <summary>Token ids that also end a response besides the model's EOS (a chat template's end-of-turn token).</summary>
    public IReadOnlyList<int>? StopTokenIds { get; init; }
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    public int LoggingSteps { get; init; } = 1;
    /// <summary>Checkpoint every N generation batches (and at the end); 0 = only at the end.</summary>
    public int SaveSteps { get; init; }
    public int? SaveTotalLimit { get; init; } = 2;
    /// <summary>Write every completion (prompt, response, reward, advantage) to rollouts.jsonl.</summary>
    public bool SaveRollouts { get; init; }
    public bool Resume { get; init; }

    public int EffectiveMiniBatch => MiniBatchSize <= 0 ? BatchSize : MiniBatchSize;

    public void Validate()
    {
        if (Steps < 1) throw new FineAlignException($"steps must be at least 1 (got {Steps})");
        if (NumGenerations < 2)
            throw new FineAlignException($"--num-generations must be at least 2 (got {NumGenerations}): a group baseline needs several samples per prompt");
        if (BatchSize < 1 || BatchSize % NumGenerations != 0)
            throw new FineAlignException($"batch size {BatchSize} must be a positive multiple of --num-generations {NumGenerations}");
        if (BatchSize % EffectiveMiniBatch != 0)
            throw new FineAlignException($"batch size {BatchSize} must be a multiple of the mini-batch size {EffectiveMiniBatch}");
        if (NumIterations < 1) throw new FineAlignException($"num iterations must be at least 1 (got {NumIterations})");
        if (!(LearningRate > 0)) throw new FineAlignException($"learning rate must be positive (got {LearningRate})");
        if (!(Temperature > 0)) throw new FineAlignException($"group methods sample at a temperature > 0 (got {Temperature})");
        if (MaxNewTokens < 1) throw new FineAlignException($"max new tokens must be at least 1 (got {MaxNewTokens})");
        if (!(Epsilon > 0)) throw new FineAlignException($"epsilon must be positive (got {Epsilon})");
        if (Beta < 0 || KlCoef < 0) throw new FineAlignException($"KL coefficients must be ≥ 0 (beta {Beta}, kl coef {KlCoef})");
    }
}

/// <summary>The outcome of <see cref="GroupTrainer.Train"/>.</summary>
public sealed record GroupResult(int Steps, IReadOnlyList<Dictionary<string, double>> LogHistory, string? LastCheckpoint, bool Completed);

/// <summary>
/// Critic-free online RL (GRPO, RLOO, REINFORCE++): each step samples G completions for each of
/// BatchSize / G prompts (<see cref="PpoRollout"/>), scores them with any <see cref="RewardSource"/>, turns the
/// rewards into advantages with <see cref="GroupAdvantages"/> and runs μ passes of the per-token clipped loss
/// (<see cref="GroupAdvantages.PolicyLoss"/>). No value model. Metrics use TRL's GRPO names. Sampling seeds
/// and mini-batch orders derive from (seed, step), so a resumed run continues the same sequence.
/// </summary>
public sealed class GroupTrainer : IDisposable
{
    public const string PolicyFolder = "policy", RolloutsFile = "rollouts.jsonl", StateFile = "group_state.json";

    private readonly CausalLM _policy, _reference;
    private readonly TextTokenizer _tokenizer;
    private readonly RewardSource _reward;
    private readonly IReadOnlyList<string> _prompts;
    private readonly AdamW _optimizer;
    private readonly List<Parameter> _params;

    public GroupTrainer(CausalLM policy, CausalLM reference, TextTokenizer tokenizer, RewardSource reward,
        IReadOnlyList<string> prompts, GroupOptions options)
    {
        options.Validate();
        if (prompts.Count == 0) throw new FineAlignException("group RL needs at least one prompt");
        _policy = policy; _reference = reference; _tokenizer = tokenizer; _reward = reward; _prompts = prompts;
        Options = options;
        foreach (var p in reference.parameters()) p.requires_grad = false;
        reference.eval();
        _params = policy.parameters().Where(p => p.requires_grad).ToList();
        _optimizer = optim.AdamW(_params, options.LearningRate, weight_decay: 0.0);
    }

    public GroupOptions Options { get; }
    /// <summary>Optional ground truth logged as <c>env/true_reward</c>: (prompt, response) → score.</summary>
    public Func<string, string, double>? TrueReward { get; init; }
    public IProgress<ProgressUpdate>? Progress { get; init; }
    public bool WriteTensorBoard { get; init; } = true;

    private string Name => Options.Advantage switch
    {
        GroupAdvantage.Rloo => "rloo", GroupAdvantage.ReinforcePlusPlus => "reinforce++", _ => "grpo",
    };

    public GroupResult Train(CancellationToken cancellation = default)
    {
        var o = Options;
        var r = OnlineRlLoop.Run(
            new OnlineRlLoop.Settings(o.OutputDir, o.Steps, o.BatchSize, o.LoggingSteps, o.SaveSteps, o.Resume, o.SaveRollouts, RolloutsFile, WriteTensorBoard),
            Step, LoadCheckpoint, SaveCheckpoint,
            (step, m) => new ProgressUpdate(Name, step, o.Steps, m["loss"], new Dictionary<string, double>
            {
                ["reward"] = m["reward"], ["kl"] = m["kl"],
            }),
            Progress,
            () => ModelIO.Save(_policy, Path.Combine(o.OutputDir, PolicyFolder), _tokenizer),
            cancellation);
        return new GroupResult(r.Steps, r.LogHistory, r.LastCheckpoint, r.Completed);
    }

    /// <summary>
    /// Prompts of generation batch <paramref name="step"/> (1-based): BatchSize / G prompts from a seeded permutation
    /// per pass over the prompts, each repeated G times in a row (row i belongs to group i / G).
    /// </summary>
    public IReadOnlyList<string> PromptsFor(int step)
    {
        int n = _prompts.Count, g = Options.NumGenerations, groups = Options.BatchSize / g;
        var list = new string[Options.BatchSize];
        for (int i = 0; i < groups; i++)
        {
            long k = (long)(step - 1) * groups + i;
            var perm = DataOrder.Permutation(n, Options.Seed, (int)(k / n));
            for (int j = 0; j < g; j++) list[i * g + j] = _prompts[perm[k % n]];
        }
        return list;
    }

    /// <summary>One generation batch and its μ passes of updates; returns the TRL-named metrics.</summary>
    public Dictionary<string, double> Step(int step, string? rolloutsPath = null)
    {
        var o = Options;
        using var scope = NewDisposeScope();
        var prompts = PromptsFor(step);
        var gen = TextGenerator.Generate(_policy, _tokenizer, prompts, new GenerationOptions
        {
            MaxNewTokens = o.MaxNewTokens, DoSample = true, Temperature = o.Temperature, TopP = o.TopP, Seed = unchecked(o.Seed * 1_000_003L + step),
            EosTokenIds = o.StopTokenIds is { Count: > 0 } stop ? _policy.Config.EosTokenIds.Concat(stop).Distinct().ToArray() : null,
        });
        using var rollout = PpoRollout.From(gen, prompts, _tokenizer.PaddingId, _policy.Config.EosTokenIds);
        var mask = rollout.ResponseMask;
        int b = (int)rollout.BatchSize, g = o.NumGenerations;

        Tensor oldLogp, refLogp;
        using (no_grad())
        {
            _policy.eval();
            oldLogp = rollout.ResponseLogProbs(_policy.Forward(rollout.InputIds, rollout.AttentionMask), o.Temperature);
            refLogp = rollout.ResponseLogProbs(_reference.Forward(rollout.InputIds, rollout.AttentionMask), o.Temperature);
        }

        TokenRewards task;
        try
        {
            task = _reward.Compute(new RewardBatch(rollout.ResponseIds, mask, null, rollout.Prompts, rollout.Responses));
        }
        catch (FineAlignException ex)
        {
            throw new FineAlignException($"{ex.Message} (generation batch {step})", ex);
        }
        using var _task = task;
        var klK1 = Ppo.KlPerToken(oldLogp, refLogp, mask, KlEstimator.K1);
        var klK3 = Ppo.KlPerToken(oldLogp, refLogp, mask, KlEstimator.K3);
        var scores = task.SequenceTotals(); // dense rewards summed: the group methods' sequence reward

        // Advantages [B, T], 0 on padding. Zero-spread groups are counted on the task scores (as TRL), so a
        // KL term folded into the reward cannot hide a group that carries no task signal.
        Tensor tokenAdv, seqReward;
        int zeroStd = GroupAdvantages.Grpo(scores, g, RewardScaling.None).ZeroStdGroups;
        switch (o.Advantage)
        {
            case GroupAdvantage.Grpo:
            {
                seqReward = GroupAdvantages.SequenceRewards(task.Values, mask, klK1, o.KlCoef);
                var r = GroupAdvantages.Grpo(seqReward, g, o.ScaleRewards);
                tokenAdv = GroupAdvantages.ToTokens(r.Advantages, mask);
                break;
            }
            case GroupAdvantage.Rloo:
            {
                seqReward = GroupAdvantages.SequenceRewards(task.Values, mask, klK1, o.KlCoef);
                var r = GroupAdvantages.Rloo(seqReward, g);
                tokenAdv = GroupAdvantages.ToTokens(r.Advantages, mask);
                break;
            }
            default:
                // Dense rewards kept per token, normalised over the whole batch; groups only feed the metrics.
                seqReward = GroupAdvantages.SequenceRewards(task.Values, mask, klK1, o.KlCoef);
                tokenAdv = GroupAdvantages.ReinforcePlusPlus(task.Values, klK1, mask, o.KlCoef);
                break;
        }
        RewardSource.CheckFinite($"{Name} advantages", tokenAdv, mask);

        var m = new Dictionary<string, double>();
        int groups = b / g;
        var groupedScores = scores.view(groups, g);
        var lengths = mask.sum(1);
        m["reward"] = scores.mean().item<float>();
        m["reward_std"] = groupedScores.std(1, unbiased: true).mean().item<float>(); // TRL: mean of the per-group std
        m["frac_reward_zero_std"] = (double)zeroStd / groups;
        m["zero_std_groups"] = zeroStd;
        m["kl"] = Ppo.MaskedMean(klK3, mask).item<float>(); // TRL: per-token k3, mean over completion tokens
        m["objective/kl"] = klK1.sum(1).mean().item<float>(); // per sequence, comparable with PPO's
        m["objective/rlhf_reward"] = seqReward.mean().item<float>();
        m["completions/mean_length"] = lengths.mean().item<float>();
        m["completions/min_length"] = lengths.min().item<float>();
        m["completions/max_length"] = lengths.max().item<float>();
        m["completions/clipped_ratio"] = (double)rollout.EndedWithEos.Count(e => !e) / b;
        m["entropy"] = (-oldLogp * mask).sum().item<float>() / Math.Max(1.0, mask.sum().item<float>());
        foreach (var kv in task.Metrics) m[kv.Key] = kv.Value;
        if (TrueReward is not null)
            m["env/true_reward"] = Enumerable.Range(0, b).Average(i => TrueReward(rollout.Prompts[i], rollout.Responses[i]));
        if (rolloutsPath is not null) WriteRollouts(rolloutsPath, step, rollout, scores, seqReward, tokenAdv, klK1);

        // μ passes × mini-batches; order from (seed, step, pass), so resume replays it.
        _policy.train();
        int mb = o.EffectiveMiniBatch;
        long width = mask.shape[1];
        double lossSum = 0, clipSum = 0; int updates = 0;
        for (int it = 0; it < o.NumIterations; it++)
        {
            var order = mb == b ? Enumerable.Range(0, b).ToArray() : DataOrder.Permutation(b, unchecked(o.Seed * 31 + step), it);
            for (int s = 0; s < b; s += mb)
            {
                using var inner = NewDisposeScope();
                var idx = tensor(order.Skip(s).Take(mb).Select(i => (long)i).ToArray());
                var mk = mask.index_select(0, idx);
                var logits = _policy.Forward(rollout.InputIds.index_select(0, idx), rollout.AttentionMask.index_select(0, idx));
                var l = logits.narrow(1, rollout.PromptWidth - 1, width).to(float32);
                if (o.Temperature != 1.0) l = l / o.Temperature;
                var logp = PpoRollout.Gather(l, rollout.ResponseIds.index_select(0, idx));
                var old = oldLogp.index_select(0, idx);
                var adv = tokenAdv.index_select(0, idx);
                var loss = GroupAdvantages.PolicyLoss(logp, old, adv, mk, o.LossType, o.Epsilon,
                    o.Beta > 0 ? refLogp.index_select(0, idx) : null, o.Beta, o.MaxNewTokens); // Dr. GRPO: constant = max completion length
                double lossValue = loss.item<float>();
                if (!double.IsFinite(lossValue))
                    throw new FineAlignException($"{Name} loss is not finite at generation batch {step}; lower the learning rate (now {o.LearningRate:G3})");
                _optimizer.zero_grad();
                loss.backward();
                if (o.MaxGradNorm > 0) nn.utils.clip_grad_norm_(_params, o.MaxGradNorm);
                _optimizer.step();
                using (no_grad())
                {
                    var ratio = (logp.detach() - old).exp();
                    var a = Ppo.ZeroPadding(adv, Ppo.AsFloatMask(mk));
                    // TRL clip_ratio: tokens where the clipped branch is the active one.
                    var clipped = ratio.lt(1 - o.Epsilon).logical_and(a.lt(0)).logical_or(ratio.gt(1 + o.Epsilon).logical_and(a.gt(0)));
                    clipSum += Ppo.MaskedMean(clipped.to(float32), mk).item<float>();
                }
                lossSum += lossValue; updates++;
            }
        }
        _optimizer.zero_grad();
        m["loss"] = lossSum / updates;
        m["clip_ratio"] = clipSum / updates;
        m["beta"] = o.Beta;
        m["kl_coef"] = o.KlCoef;
        m["lr"] = o.LearningRate;
        return m;
    }

    private void WriteRollouts(string path, int step, PpoRollout r, Tensor scores, Tensor seqReward, Tensor tokenAdv, Tensor kl)
    {
        var sc = scores.contiguous().data<float>().ToArray();
        var sr = seqReward.contiguous().data<float>().ToArray();
        var klRow = kl.sum(1).contiguous().data<float>().ToArray();
        // Group methods give one advantage per sequence; REINFORCE++ varies per token (first token's logged).
        var adv = tokenAdv.select(1, 0).contiguous().data<float>().ToArray();
        using var w = new StreamWriter(path, append: true);
        for (int i = 0; i < r.Prompts.Length; i++)
        {
            var row = new Dictionary<string, object?>
            {
                ["step"] = step, ["group"] = i / Options.NumGenerations, ["prompt"] = r.Prompts[i], ["response"] = r.Responses[i],
                ["score"] = sc[i], ["reward"] = sr[i], ["advantage"] = adv[i], ["kl"] = klRow[i], ["ended_with_eos"] = r.EndedWithEos[i],
            };
            if (TrueReward is not null) row["true_reward"] = TrueReward(r.Prompts[i], r.Responses[i]);
            w.WriteLine(JsonSerializer.Serialize(row));
        }
    }

    private sealed record GroupState(int Step, int Seed, string Advantage, List<Dictionary<string, double>> LogHistory);

    private string SaveCheckpoint(int step, List<Dictionary<string, double>> history) =>
        CheckpointStore.Save(Options.OutputDir, step, dir =>
        {
            ModelIO.Save(_policy, Path.Combine(dir, PolicyFolder), _tokenizer);
            _optimizer.save_state_dict(Path.Combine(dir, CheckpointStore.OptimizerFile));
            File.WriteAllText(Path.Combine(dir, StateFile), JsonSerializer.Serialize(new GroupState(step, Options.Seed, Name, history)));
            // Written last: its presence marks the folder complete.
            new TrainerState { GlobalStep = step, MaxSteps = Options.Steps, Seed = Options.Seed, TorchNumThreads = torch.get_num_threads() }
                .Save(Path.Combine(dir, CheckpointStore.StateFile));
        }, Options.SaveTotalLimit);

    private int LoadCheckpoint(string dir, List<Dictionary<string, double>> history)
    {
        string statePath = Path.Combine(dir, StateFile);
        if (!File.Exists(statePath)) throw new FineAlignException($"{dir}: {StateFile} is missing; not a grpo/rloo checkpoint");
        var state = JsonSerializer.Deserialize<GroupState>(File.ReadAllText(statePath))
                    ?? throw new FineAlignException($"{statePath}: empty state");
        if (state.Seed != Options.Seed)
            throw new FineAlignException($"{dir} was written with seed {state.Seed}, not {Options.Seed}; resume with the same seed");
        if (state.Advantage != Name)
            throw new FineAlignException($"{dir} was written by {state.Advantage}, not {Name}; resume with the same --advantage");
        ModelIO.LoadInto(_policy, Path.Combine(dir, PolicyFolder));
        _optimizer.load_state_dict(Path.Combine(dir, CheckpointStore.OptimizerFile));
        history.AddRange(state.LogHistory);
        return state.Step;
    }

    public void Dispose() => _optimizer.Dispose();
}
