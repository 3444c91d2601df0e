using System.Diagnostics;
using FineAlign.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Training;

/// <summary>
/// The one place a training run's model is made ready for real-scale training, before a trainer sees it: LoRA
/// adapters (PEFT), bf16 mixed precision, gradient checkpointing and the device. Every trainer gets its policy through
/// here (the CLI calls <see cref="Prepare"/> once), and its frozen reference through <see cref="Reference"/>.
/// </summary>
public static class ModelSetup
{
    /// <summary>
    /// Applies <paramref name="lora"/> (null = full fine-tuning), then <see cref="TrainingOptions.Bf16"/> (LoRA: the frozen
    /// base is stored in bf16 and the fp32 adapters are cast per matmul; full: fp32 master weights cast per matmul),
    /// <see cref="TrainingOptions.GradientCheckpointing"/> and <see cref="TrainingOptions.Device"/>.
    /// </summary>
    /// <param name="warn">Receives one-line warnings (a CPU without native bf16).</param>
    public static CausalLM Prepare(CausalLM model, TrainingOptions options, LoraSettings? lora, long seed, Action<string>? warn = null)
    {
        if (lora is not null) Lora.Apply(model, lora, seed);
        if (options.Bf16)
        {
            if (model.Config.IsGpt2) throw new FineAlignException("bf16 mixed precision is implemented for llama, mistral and qwen2 models, not gpt2.");
            CheckBf16(warn);
            if (model.Lora is not null) Lora.CastBase(model, ScalarType.BFloat16);
            model.ComputeDtype = ScalarType.BFloat16;
        }
        if (options.GradientCheckpointing)
        {
            if (model.Config.IsGpt2) throw new FineAlignException("gradient_checkpointing is implemented for llama, mistral and qwen2 models, not gpt2.");
            model.GradientCheckpointing = true;
        }
        MoveTo(model, options.Device);
        return model;
    }

    /// <summary>
    /// The frozen reference of a run: the base with the adapters off when the policy carries LoRA (no second copy of the
    /// weights), else null (the trainer then takes a frozen copy of the initial policy, as before).
    /// </summary>
    public static CausalLM? Reference(CausalLM policy) => policy.Lora is not null ? Lora.AdapterOff(policy) : null;

    /// <summary>Parses "cpu", "cuda", "cuda:N" into a torch device.</summary>
    public static Device ParseDevice(string name)
    {
        if (name == "cpu") return CPU;
        if (!cuda.is_available())
            throw new FineAlignException($"device '{name}': this build has no CUDA (TorchSharp-cpu is the only libtorch served here); use --device cpu. " +
                                         "The CUDA path is one seam (models and inputs follow the model's device) and is untested.");
        return new Device(name);
    }

    /// <summary>Moves the model to <paramref name="device"/> (inputs made on the host follow it: see <see cref="CausalLM"/>).</summary>
    public static void MoveTo(nn.Module model, string device)
    {
        var d = ParseDevice(device);
        if (d.type != DeviceType.CPU) model.to(d);
    }

    /// <summary>Whether this CPU has native bf16 dot products (AVX512-BF16 or AMX-BF16); null when it cannot be told.</summary>
    public static bool? CpuHasBf16()
    {
        try
        {
            if (!File.Exists("/proc/cpuinfo")) return null;
            var flags = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal));
            if (flags is null) return null;
            var set = flags.Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
            return set.Contains("avx512_bf16") || set.Contains("amx_bf16");
        }
        catch (IOException) { return null; }
    }

    /// <summary>
    /// Median time ratio bf16 / fp32 of a 512³ GEMM on this machine right now (above 1 = bf16 slower). Used for the
    /// warning on CPUs without native bf16, and by the benchmarks.
    /// </summary>
    public static double MeasureBf16GemmSlowdown(int n = 512, int reps = 5)
    {
        double Time(ScalarType dtype)
        {
            using var scope = NewDisposeScope();
            var a = randn(n, n).to(dtype);
            var b = randn(n, n).to(dtype);
            using (matmul(a, b)) { }
            var times = new List<double>();
            for (int i = 0; i < reps; i++)
            {
                var sw = Stopwatch.StartNew();
                using (matmul(a, b)) { }
                times.Add(sw.Elapsed.TotalSeconds);
            }
            times.Sort();
            return times[times.Count / 2];
        }
        using var _ = no_grad();
        return Time(ScalarType.BFloat16) / Time(ScalarType.Float32);
    }

    private static void CheckBf16(Action<string>? warn)
    {
        if (CpuHasBf16() is not false) return;
        double slow = MeasureBf16GemmSlowdown();
        warn?.Invoke($"--bf16: this CPU has no native bf16 instructions (no avx512_bf16/amx_bf16 in /proc/cpuinfo); bf16 matmuls are emulated " +
                     $"and measured {slow:F1}× the time of fp32 here. Training still works; drop --bf16 for speed.");
    }
}
