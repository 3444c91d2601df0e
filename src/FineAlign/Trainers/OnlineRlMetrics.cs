using FineAlign.Generation;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Training;
using static TorchSharp.torch;

namespace FineAlign.Trainers;

/// <summary>What a scored rollout batch holds before the updates (per-token tensors [B, T]).</summary>
public sealed record RolloutStats(RolloutBatch Rollout, TokenRewards Task, Tensor Kl, Tensor ShapedRewards, Tensor OldLogProbs,
    Tensor RefLogProbs, double Beta, Tensor EndedWithEos);

/// <summary>
/// The engine's metrics in TRL's names: PPOTrainer's (objective/*, policy/*, loss/*, val/*) when the estimator uses a
/// critic, GRPOTrainer's (reward, reward_std, frac_reward_zero_std, kl, completions/*, loss, clip_ratio) when not.
/// </summary>
public static class OnlineRlMetrics
{
    /// <summary>Metrics of the sampled batch, and each response's score (the task reward summed, less any missing-EOS penalty).</summary>
    public static (Dictionary<string, double> Metrics, Tensor Scores) Rollout(OnlineRlOptions o, RolloutStats s, Func<string, string, double>? trueReward)
    {
        var m = new Dictionary<string, double>();
        var mask = s.Rollout.ResponseMask;
        int b = (int)s.Rollout.BatchSize;
        Tensor scores;
        if (o.UsesCritic)
        {
            scores = (s.Task.Values * mask).sum(1);
            if (o.MissingEosPenalty is double pen) scores = scores - s.EndedWithEos.logical_not().to(float32) * pen;
            double klSum = (s.Kl * mask).sum(1).mean().item<float>();
            double scoreMean = scores.mean().item<float>();
            m["objective/kl"] = klSum;
            m["objective/entropy"] = (-s.OldLogProbs * mask).sum(1).mean().item<float>();
            m["objective/non_score_reward"] = -s.Beta * klSum;
            m["objective/rlhf_reward"] = scoreMean - s.Beta * klSum;
            m["objective/scores"] = scoreMean;
            m["objective/kl_coef"] = s.Beta;
            m["val/num_eos_tokens"] = s.Rollout.EndedWithEos.Count(e => e);
            m["val/mean_response_length"] = mask.sum(1).mean().item<float>();
        }
        else
        {
            int g = o.NumGenerations, groups = b / g;
            scores = s.Task.SequenceTotals(); // dense rewards summed: the group methods' sequence reward
            // Zero-spread groups are counted on the task scores (as TRL), so a KL term folded into the reward
            // cannot hide a group that carries no task signal.
            int zeroStd = GroupAdvantages.Grpo(scores, g, RewardScaling.None).ZeroStdGroups;
            var lengths = mask.sum(1);
            m["reward"] = scores.mean().item<float>();
            m["reward_std"] = scores.view(groups, g).std(1, unbiased: true).mean().item<float>(); // TRL: mean of the per-group std
            m["frac_reward_zero_std"] = (double)zeroStd / groups;
            m["zero_std_groups"] = zeroStd;
            m["kl"] = Masked.Mean(Kl.PerToken(s.OldLogProbs, s.RefLogProbs, mask, KlEstimator.K3), mask).item<float>(); // TRL: per-token k3
            m["objective/kl"] = s.Kl.sum(1).mean().item<float>(); // per sequence, comparable with PPO's
            m["objective/rlhf_reward"] = s.ShapedRewards.sum(1).mean().item<float>();
            m["completions/mean_length"] = lengths.mean().item<float>();
            m["completions/min_length"] = lengths.min().item<float>();
            m["completions/max_length"] = lengths.max().item<float>();
            m["completions/clipped_ratio"] = (double)s.Rollout.EndedWithEos.Count(e => !e) / b;
            m["entropy"] = (-s.OldLogProbs * mask).sum().item<float>() / Math.Max(1.0, mask.sum().item<float>());
        }
        foreach (var kv in s.Task.Metrics) m[kv.Key] = kv.Value;
        if (trueReward is not null)
            m["env/true_reward"] = Enumerable.Range(0, b).Average(i => trueReward(s.Rollout.Prompts[i], s.Rollout.Responses[i]));
        return (m, scores);
    }

    /// <summary>The progress line of a finished step.</summary>
    public static ProgressUpdate Describe(OnlineRlOptions o, int step, Dictionary<string, double> m) => o.UsesCritic
        ? new ProgressUpdate(o.Name, step, o.Steps, m["loss/policy_avg"], new Dictionary<string, double>
        {
            ["objective/scores"] = m["objective/scores"], ["objective/kl"] = m["objective/kl"],
        })
        : new ProgressUpdate(o.Name, step, o.Steps, m["loss"], new Dictionary<string, double> { ["reward"] = m["reward"], ["kl"] = m["kl"] });

    /// <summary>Averages over the mini-batch updates of one step.</summary>
    public sealed class UpdateStats(OnlineRlOptions o)
    {
        private double _loss, _policy, _value, _clip, _valueClip, _approxKl, _entropy, _ratio;
        private int _updates;

        /// <param name="entropy">The policy's entropy at each response position of the mini-batch [b, T] (PPO; null without a critic).</param>
        /// <param name="loss">The minimised loss (policy + weighted value loss).</param>
        public void Add(Tensor? entropy, Tensor logp, Tensor oldLogp, Tensor advantages, Tensor mask, double loss,
            Tensor policyLoss, ValueLossResult? valueLoss)
        {
            using var _ = no_grad();
            if (o.UsesCritic)
            {
                var (clipFraction, approxKl) = Ppo.ClipStatistics(logp, oldLogp, advantages, mask, o.ClipRange);
                _entropy += Masked.Mean(entropy!, mask).item<float>();
                _ratio += Masked.Mean((logp.detach() - oldLogp).exp(), mask).item<float>();
                _policy += policyLoss.item<float>(); _value += valueLoss!.Loss.item<float>();
                _clip += clipFraction; _valueClip += valueLoss.ClipFraction; _approxKl += approxKl;
            }
            else
            {
                var ratio = (logp.detach() - oldLogp).exp();
                var a = Masked.ZeroPadding(advantages, Masked.AsFloatMask(mask));
                double eps = o.ClipRange;
                // TRL clip_ratio: tokens where the clipped branch is the active one.
                var clipped = ratio.lt(1 - eps).logical_and(a.lt(0)).logical_or(ratio.gt(1 + eps).logical_and(a.gt(0)));
                _clip += Masked.Mean(clipped.to(float32), mask).item<float>();
                _loss += loss;
            }
            _updates++;
        }

        public void WriteTo(Dictionary<string, double> m)
        {
            int n = _updates;
            if (o.UsesCritic)
            {
                m["policy/approxkl_avg"] = _approxKl / n;
                m["policy/clipfrac_avg"] = _clip / n;
                m["loss/policy_avg"] = _policy / n;
                m["loss/value_avg"] = _value / n;
                m["val/clipfrac_avg"] = _valueClip / n;
                m["policy/entropy_avg"] = _entropy / n;
                m["val/ratio"] = _ratio / n;
            }
            else
            {
                m["loss"] = _loss / n;
                m["clip_ratio"] = _clip / n;
                m["beta"] = o.Beta;
                m["kl_coef"] = o.KlCoef;
            }
            m["lr"] = o.LearningRate;
        }
    }
}
