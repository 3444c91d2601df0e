using FineAlign.Models;
using FineAlign.Text;

namespace FineAlign.Evaluation;

/// <summary>
/// Periodic held-out evaluation for online RL (<c>--eval-prompts FILE --eval-steps N</c>): every N steps, the policy
/// is evaluated with <see cref="PolicyEval"/> on fixed prompts against the reference (same seed each time, so the
/// curve moves only with the policy) and the numbers come back as <c>eval/*</c> log scalars — the same definitions
/// as <c>eval-policy</c> and <c>report</c>. A trainer's step loop calls it in one line:
/// <code>foreach (var kv in heldOut?.MetricsAt(step, policy, reference) ?? []) metrics[kv.Key] = kv.Value;</code>
/// </summary>
public sealed class HeldOutEval
{
    public HeldOutEval(IReadOnlyList<string> prompts, EvalReward reward, TextTokenizer tokenizer, int everySteps, PolicyEvalOptions? options = null)
    {
        if (prompts.Count == 0) throw new FineAlignException("--eval-prompts holds no prompts");
        if (everySteps < 0) throw new FineAlignException("--eval-steps must be ≥ 0");
        Prompts = prompts; Reward = reward; Tokenizer = tokenizer; EverySteps = everySteps; Options = options ?? new PolicyEvalOptions();
    }

    public IReadOnlyList<string> Prompts { get; }
    public EvalReward Reward { get; }
    public TextTokenizer Tokenizer { get; }
    /// <summary>Evaluate every this many steps (0 = never during training).</summary>
    public int EverySteps { get; }
    public PolicyEvalOptions Options { get; }
    /// <summary>
    /// Where evaluation responses are sampled (null = in-process from the policy). A remote engine only makes sense when
    /// its servers hold the current weights (<c>--rollout-sync full|lora</c>); the CLI passes it only then.
    /// </summary>
    public Generation.IRolloutEngine? Rollouts { get; init; }
    /// <summary>Each prompt's dataset columns, for rewards that read them (null otherwise).</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, string>>? Columns { get; init; }

    /// <summary>From a prompt file (<see cref="Data.PromptReader"/> formats) and a reward spec.</summary>
    public static HeldOutEval FromFile(string promptsFile, string rewardSpec, TextTokenizer tokenizer, int everySteps, int maxNewTokens, long seed,
        int maxPrompts = 64, Action<string>? warn = null, Generation.IRolloutEngine? rollouts = null)
    {
        var rows = Data.PromptReader.ReadRows(promptsFile).Rows.Take(maxPrompts).ToList();
        var reward = EvalReward.Build(rewardSpec, tokenizer, warn);
        return new(rows.Select(r => r.Prompt).ToList(), reward, tokenizer, everySteps, new PolicyEvalOptions { MaxNewTokens = maxNewTokens, Seed = seed })
        {
            Rollouts = rollouts, Columns = reward.ColumnsOf(promptsFile, rows),
        };
    }

    public bool Due(long step) => EverySteps > 0 && step % EverySteps == 0;

    /// <summary>The <c>eval/*</c> metrics at <paramref name="step"/>, or an empty dictionary when no evaluation is due.</summary>
    public Dictionary<string, double> MetricsAt(long step, CausalLM policy, CausalLM reference) =>
        Due(step) ? Evaluate(policy, reference).Metrics("eval/") : [];

    public PolicyEvalResult Evaluate(CausalLM policy, CausalLM reference) => PolicyEval.Run(policy, reference, Tokenizer, Prompts, Reward, Options, Rollouts, Columns);
}
