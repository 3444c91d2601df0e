using System.Text.Json;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Text;
using FineAlign.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FineAlign.Trainers;

/// <summary>The engine's checkpoint: what it restores on resume.</summary>
/// <param name="RewardStats">Running statistics of the normalised reward components (<c>--reward-normalize</c>), by name; null without.</param>
public sealed record OnlineRlState(int Step, int Seed, string? Advantage, double? KlCoef, List<Dictionary<string, double>> LogHistory,
    Dictionary<string, Rewards.RunningMomentsState>? RewardStats = null);

/// <summary>
/// Checkpoints of the online-RL engine (<c>OnlineRlTrainer</c>): model/ (and value/ with a critic), the optimizer, <see cref="StateFile"/>,
/// and trainer_state.json written last (its presence marks the folder complete). Checkpoints of earlier versions
/// (policy/, ppo_state.json, group_state.json) still resume.
/// </summary>
internal sealed class OnlineRlCheckpoints(OnlineRlOptions options, CausalLM policy, ValueModel? value, TextTokenizer tokenizer, AdamW optimizer)
{
    public const string StateFile = "online_rl_state.json";
    private static readonly string[] LegacyStateFiles = ["ppo_state.json", "group_state.json"];

    /// <summary>The final models, saved into <paramref name="dir"/>.</summary>
    public void SaveModels(string dir)
    {
        ModelIO.Save(policy, Path.Combine(dir, RunLayout.ModelFolder), tokenizer);
        value?.Save(Path.Combine(dir, RunLayout.ValueFolder), tokenizer);
    }

    public string Save(int step, double klCoef, List<Dictionary<string, double>> history, Dictionary<string, Rewards.RunningMomentsState>? rewardStats = null) =>
        CheckpointStore.Save(options.OutputDir, step, dir =>
        {
            SaveModels(dir);
            optimizer.save_state_dict(Path.Combine(dir, CheckpointStore.OptimizerFile));
            File.WriteAllText(Path.Combine(dir, StateFile), JsonSerializer.Serialize(
                new OnlineRlState(step, options.Seed, AdvantageEstimators.Canonical(options.Advantage), klCoef, history, rewardStats)));
            new TrainerState { GlobalStep = step, MaxSteps = options.Steps, Seed = options.Seed, TorchNumThreads = torch.get_num_threads() }
                .Save(Path.Combine(dir, CheckpointStore.StateFile));
        }, options.SaveTotalLimit);

    public OnlineRlState Load(string dir, List<Dictionary<string, double>> history)
    {
        string statePath = new[] { StateFile }.Concat(LegacyStateFiles).Select(f => Path.Combine(dir, f)).FirstOrDefault(File.Exists)
            ?? throw new FineAlignException($"{dir}: {StateFile} is missing; not a {options.Name} checkpoint");
        var state = JsonSerializer.Deserialize<OnlineRlState>(File.ReadAllText(statePath))
                    ?? throw new FineAlignException($"{statePath}: empty state");
        if (state.Seed != options.Seed)
            throw new FineAlignException($"{dir} was written with seed {state.Seed}, not {options.Seed}; resume with the same seed");
        // ppo_state.json predates the estimator field: it was always GAE.
        string written = AdvantageEstimators.Canonical(state.Advantage ?? AdvantageEstimators.Gae);
        if (written != AdvantageEstimators.Canonical(options.Advantage))
            throw new FineAlignException($"{dir} was written by {written}, not {AdvantageEstimators.Canonical(options.Advantage)}; resume with the same --advantage");
        string model = Path.Combine(dir, RunLayout.ModelFolder);
        if (!Directory.Exists(model) && Directory.Exists(Path.Combine(dir, RunLayout.LegacyPolicyFolder))) model = Path.Combine(dir, RunLayout.LegacyPolicyFolder);
        ModelIO.LoadInto(policy, model);
        value?.LoadFrom(Path.Combine(dir, RunLayout.ValueFolder));
        optimizer.load_state_dict(Path.Combine(dir, CheckpointStore.OptimizerFile));
        history.AddRange(state.LogHistory);
        return state;
    }
}

/// <summary>rollouts.jsonl: one line per sampled response.</summary>
internal static class RolloutLog
{
    public static void Append(string path, int step, int groupSize, RolloutStats s, Tensor scores, Tensor tokenAdvantages,
        Func<string, string, double>? trueReward)
    {
        var r = s.Rollout;
        // Written once per step (with --save-rollouts), so one host copy per tensor; .cpu() is a no-op on CPU.
        var rew = s.Task.Values.cpu().contiguous().data<float>().ToArray();
        var sc = scores.cpu().contiguous().data<float>().ToArray();
        var seq = s.ShapedRewards.sum(1).cpu().contiguous().data<float>().ToArray();
        var klRow = s.Kl.sum(1).cpu().contiguous().data<float>().ToArray();
        // Outcome estimators give one advantage per sequence; GAE and REINFORCE++ vary per token (the first token's is logged).
        var adv = tokenAdvantages.select(1, 0).cpu().contiguous().data<float>().ToArray();
        var mask = r.ResponseMask.cpu().contiguous().data<float>().ToArray();
        var ids = r.ResponseIds.cpu().contiguous().data<long>().ToArray();
        int t = (int)r.ResponseIds.shape[1];
        using var w = new StreamWriter(path, append: true);
        for (int i = 0; i < r.Prompts.Length; i++)
        {
            var valid = Enumerable.Range(0, t).Where(j => mask[i * t + j] > 0).ToArray();
            var row = new Dictionary<string, object?>
            {
                ["step"] = step, ["group"] = i / groupSize, ["prompt"] = r.Prompts[i], ["response"] = r.Responses[i], ["score"] = sc[i],
                ["reward"] = seq[i], ["advantage"] = adv[i], ["kl"] = klRow[i], ["ended_with_eos"] = r.EndedWithEos[i],
                ["response_ids"] = valid.Select(j => ids[i * t + j]).ToArray(),
                ["token_rewards"] = valid.Select(j => rew[i * t + j]).ToArray(),
            };
            if (trueReward is not null) row["true_reward"] = trueReward(r.Prompts[i], r.Responses[i]);
            w.WriteLine(JsonSerializer.Serialize(row));
        }
    }

    /// <summary>Drops rollouts logged after <paramref name="keepThrough"/> (a resumed run rewrites them).</summary>
    public static void Trim(string path, int keepThrough)
    {
        if (!File.Exists(path)) return;
        if (keepThrough == 0) { File.Delete(path); return; }
        var kept = File.ReadLines(path).Where(l => l.Length > 0 && JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt32() <= keepThrough).ToList();
        File.WriteAllLines(path, kept);
    }
}
