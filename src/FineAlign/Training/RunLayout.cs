namespace FineAlign.Training;

/// <summary>The layout of every trainer's output folder (and of each checkpoint-N inside it).</summary>
public static class RunLayout
{
    /// <summary>The trained model, a Hugging Face folder: the same name for every trainer, so <c>--model RUN</c> finds it.</summary>
    public const string ModelFolder = "model";
    /// <summary>PPO's value model (GAE only).</summary>
    public const string ValueFolder = "value";
    /// <summary>Where PPO, GRPO and RLOO saved their policy before every trainer used <see cref="ModelFolder"/>; still read.</summary>
    public const string LegacyPolicyFolder = "policy";
}
