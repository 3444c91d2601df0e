using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace FineAlign.Cli;

/// <summary>Where an option's effective value came from; precedence CommandLine &gt; Config &gt; Default.</summary>
public enum ValueSource { Default, Config, CommandLine }

/// <summary>A usage error (bad option value on the command line): printed like any error, exit code 2.</summary>
public sealed class UsageException(string message) : FineAlignException(message);

/// <summary>
/// A command whose options can also come from a YAML recipe (<c>--config recipe.yaml</c>). Each option is declared
/// once with <see cref="Declare{T}"/> (name, default, description, optional check); the action receives a
/// <see cref="Recipe"/> holding the merged values (default &lt; YAML &lt; flag).
/// <code>
/// var cmd = new RecipeCommand("sft", "Supervised fine-tuning.");
/// var lr = cmd.Declare("--learning-rate", 1e-4, "Peak learning rate.", check: v => v > 0 ? null : "must be positive");
/// cmd.SetRecipeAction((recipe, ct) => { double x = recipe.Get(lr); ...; return Task.FromResult(0); });
/// </code>
/// </summary>
public class RecipeCommand : Command
{
    private readonly List<Declared> _declared = [];

    public RecipeCommand(string name, string description) : base(name, description)
    {
        ConfigOption = new Option<string?>("--config", "-c")
        {
            Description = "YAML recipe: keys are this command's option names without dashes (snake_case or kebab-case, " +
                          "e.g. 'learning_rate: 1e-4'); command-line flags override it.",
            HelpName = "recipe.yaml",
        };
        Add(ConfigOption);
    }

    public Option<string?> ConfigOption { get; }

    /// <summary>All options declared with <see cref="Declare{T}"/>, in order.</summary>
    public IReadOnlyList<Option> DeclaredOptions => _declared.Select(d => d.Option).ToList();

    /// <summary>
    /// Declares an option once: <paramref name="name"/> like "--learning-rate" (the YAML key is "learning_rate" or
    /// "learning-rate"), its default (shown in --help), description and an optional <paramref name="check"/> returning
    /// an error text for invalid values (applied to the merged value whatever its source).
    /// Supported T: string, bool, int, long, float, double, enums, nullable forms and arrays of these.
    /// </summary>
    public Option<T> Declare<T>(string name, T defaultValue, string description, Func<T, string?>? check = null, string? alias = null)
    {
        if (!name.StartsWith("--", StringComparison.Ordinal)) name = "--" + name;
        var option = alias is null ? new Option<T>(name) : new Option<T>(name, alias);
        option.Description = description;
        option.DefaultValueFactory = _ => defaultValue;
        Add(option);
        _declared.Add(new Declared(option, Recipe.NormalizeKey(name), typeof(T), defaultValue,
            check is null ? null : v => check((T)v!), alias is not null && alias.StartsWith("--", StringComparison.Ordinal) ? Recipe.NormalizeKey(alias) : null));
        return option;
    }

    /// <summary>Sets the action; the recipe (YAML + flags) is loaded and checked before <paramref name="action"/> runs.</summary>
    public void SetRecipeAction(Func<Recipe, CancellationToken, Task<int>> action) =>
        SetAction((parseResult, ct) => action(Recipe.Load(this, parseResult), ct));

    /// <summary>Synchronous form of <see cref="SetRecipeAction(Func{Recipe, CancellationToken, Task{int}})"/>.</summary>
    public void SetRecipeAction(Func<Recipe, CancellationToken, int> action) =>
        SetAction((parseResult, ct) => Task.FromResult(action(Recipe.Load(this, parseResult), ct)));

    internal IReadOnlyList<Declared> Declarations => _declared;

    /// <param name="AliasKey">A long alias (e.g. --ppo-epochs for --num-iterations) is a recipe key too.</param>
    internal sealed record Declared(Option Option, string Key, Type Type, object? Default, Func<object?, string?>? Check, string? AliasKey = null);
}

/// <summary>The merged option values of one invocation of a <see cref="RecipeCommand"/>.</summary>
public sealed class Recipe
{
    private readonly Dictionary<Option, (object? Value, ValueSource Source)> _values = [];

    private Recipe(ParseResult parseResult, string? configPath)
    {
        ParseResult = parseResult;
        ConfigPath = configPath;
    }

    public ParseResult ParseResult { get; }

    /// <summary>The --config file as given, or null.</summary>
    public string? ConfigPath { get; }

    /// <summary>Standard output of this invocation (redirected in tests).</summary>
    public TextWriter Out => ParseResult.InvocationConfiguration.Output;

    public TextWriter Error => ParseResult.InvocationConfiguration.Error;

    /// <summary>The effective value of a declared option.</summary>
    public T Get<T>(Option<T> option) =>
        _values.TryGetValue(option, out var v) ? (T)v.Value! : throw new ArgumentException($"option {option.Name} was not declared with Declare<T>");

    public ValueSource SourceOf(Option option) => _values[option].Source;

    /// <summary>Effective values by option name (without dashes), e.g. to save the run's configuration.</summary>
    public IReadOnlyDictionary<string, object?> Values =>
        _values.ToDictionary(kv => kv.Key.Name.TrimStart('-'), kv => kv.Value.Value);

    /// <summary>Merges defaults, the YAML recipe (if any) and explicit flags; runs the options' checks.</summary>
    public static Recipe Load(RecipeCommand command, ParseResult parseResult)
    {
        string? configPath = parseResult.GetValue(command.ConfigOption);
        var recipe = new Recipe(parseResult, configPath);
        var fromYaml = configPath is null ? [] : ReadYaml(configPath, command, parseResult);
        foreach (var d in command.Declarations)
        {
            OptionResult? given = parseResult.GetResult(d.Option);
            (object? value, ValueSource source) =
                given is { Implicit: false } ? (given.GetValueOrDefault<object?>(), ValueSource.CommandLine)
                : fromYaml.TryGetValue(d.Key, out var y) ? (y, ValueSource.Config)
                : (d.Default, ValueSource.Default);
            if (d.Check?.Invoke(value) is { } problem)
            {
                string where = source switch
                {
                    ValueSource.Config => $" (from {configPath})",
                    ValueSource.Default => " (the default)",
                    _ => "",
                };
                string msg = $"option {d.Option.Name}: {problem}, got {Format(value)}{where}";
                throw source == ValueSource.CommandLine ? new UsageException(msg) : new FineAlignException(msg);
            }
            recipe._values[d.Option] = (value, source);
        }
        return recipe;
    }

    /// <summary>"--Learning_Rate" → "learning-rate".</summary>
    public static string NormalizeKey(string key) =>
        key.Trim().TrimStart('-').Replace('_', '-').ToLowerInvariant();

    private static Dictionary<string, object?> ReadYaml(string path, RecipeCommand command, ParseResult parseResult)
    {
        if (!File.Exists(path))
            throw new FineAlignException(Directory.Exists(path)
                ? $"config '{path}' is a folder, expected a YAML file"
                : $"config file not found: {path}");
        var yaml = new YamlStream();
        try
        {
            using var reader = new StreamReader(path);
            yaml.Load(reader);
        }
        catch (YamlException ex)
        {
            throw new DataFormatException(path, ex.Start.Line, null, "invalid YAML: " + StripPosition(ex.Message));
        }
        var result = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (yaml.Documents.Count == 0 || yaml.Documents[0].RootNode is YamlScalarNode { Value: null or "" })
            return result;   // empty file: no values
        if (yaml.Documents.Count > 1)
            throw new DataFormatException(path, yaml.Documents[1].RootNode.Start.Line, null, "a recipe must hold a single YAML document");
        if (yaml.Documents[0].RootNode is not YamlMappingNode map)
            throw new DataFormatException(path, yaml.Documents[0].RootNode.Start.Line, null,
                "a recipe must be a mapping of option names to values (e.g. 'seed: 42')");

        var byKey = command.Declarations.ToDictionary(d => d.Key, StringComparer.Ordinal);
        foreach (var d in command.Declarations)
            if (d.AliasKey is not null) byKey.TryAdd(d.AliasKey, d);
        var firstLine = new Dictionary<string, long>(StringComparer.Ordinal);
        string commandPath = CommandPath(parseResult);
        foreach (var (keyNode, valueNode) in map.Children)
        {
            long line = keyNode.Start.Line;
            string rawKey = keyNode is YamlScalarNode { Value: { } k } ? k : keyNode.ToString();
            string key = NormalizeKey(rawKey);
            if (!byKey.TryGetValue(key, out var d))
            {
                string? near = Suggest(key, byKey.Keys.Append("config"));
                string hint = near is null ? "" : $" (did you mean '{(rawKey.Contains('_') ? near.Replace('-', '_') : near)}'?)";
                string what = key == "config" ? "'config' cannot be set inside a recipe" : $"unknown key '{rawKey}' for '{commandPath}'";
                string valid = near is null && key != "config"
                    ? $"; valid keys: {string.Join(", ", byKey.Keys.Select(x => x.Replace('-', '_')))}" : "";
                throw new DataFormatException(path, line, null, what + (key == "config" ? "" : hint) + valid);
            }
            if (!firstLine.TryAdd(d.Key, line))
                throw new DataFormatException(path, line, rawKey, $"set twice (also on line {firstLine[d.Key]})");
            result[d.Key] = Convert(valueNode, d.Type, path, rawKey);
        }
        return result;
    }

    private static object? Convert(YamlNode node, Type type, string path, string key)
    {
        Type? element = type.IsArray ? type.GetElementType() : null;
        if (element is not null)
        {
            var items = node is YamlSequenceNode seq ? seq.Children.ToList() : [node];
            var array = Array.CreateInstance(element, items.Count);
            for (int i = 0; i < items.Count; i++) array.SetValue(Convert(items[i], element, path, key), i);
            return array;
        }
        if (node is not YamlScalarNode scalar)
            throw new DataFormatException(path, node.Start.Line, key,
                $"expected {Describe(type)}, got a {(node is YamlSequenceNode ? "list" : "mapping")}");
        string raw = scalar.Value ?? "";
        bool isNull = scalar.Style == YamlDotNet.Core.ScalarStyle.Plain && raw is "" or "~" or "null" or "Null" or "NULL";
        Type? underlying = Nullable.GetUnderlyingType(type);
        if (isNull)
        {
            if (underlying is not null || !type.IsValueType) return null;
            throw new DataFormatException(path, node.Start.Line, key, $"expected {Describe(type)}, got null");
        }
        Type t = underlying ?? type;
        object? value = t switch
        {
            _ when t == typeof(string) => raw,
            _ when t == typeof(bool) => raw.ToLowerInvariant() switch
            {
                "true" or "yes" or "on" => true,
                "false" or "no" or "off" => false,
                _ => null,
            },
            _ when t == typeof(int) => int.TryParse(raw, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) ? i : null,
            _ when t == typeof(long) => long.TryParse(raw, NumberStyles.Integer, CultureInfo.InvariantCulture, out long l) ? l : null,
            _ when t == typeof(double) => double.TryParse(raw, NumberStyles.Float, CultureInfo.InvariantCulture, out double x) ? x : null,
            _ when t == typeof(float) => float.TryParse(raw, NumberStyles.Float, CultureInfo.InvariantCulture, out float f) ? f : null,
            _ when t.IsEnum => Enum.GetNames(t).FirstOrDefault(n => Squash(n) == Squash(raw)) is { } name
                ? Enum.Parse(t, name) : null,
            _ => throw new NotSupportedException($"recipe option type {t.Name} is not supported"),
        };
        return value ?? throw new DataFormatException(path, node.Start.Line, key, $"expected {Describe(type)}, got '{raw}'");
    }

    private static string Describe(Type type)
    {
        Type t = Nullable.GetUnderlyingType(type) ?? type;
        if (t.IsArray) return $"a list of {Describe(t.GetElementType()!)} values";
        if (t.IsEnum) return "one of " + string.Join(", ", Enum.GetNames(t).Select(EnumName));
        return t == typeof(string) ? "a string"
            : t == typeof(bool) ? "a boolean (true/false)"
            : t == typeof(int) || t == typeof(long) ? "an integer"
            : t == typeof(double) || t == typeof(float) ? "a number"
            : t.Name;
    }

    /// <summary>"LinearWarmup" → "linear-warmup" (how enum values are shown).</summary>
    public static string EnumName(string name) =>
        string.Concat(name.Select((c, i) => i > 0 && char.IsUpper(c) ? "-" + char.ToLowerInvariant(c) : char.ToLowerInvariant(c).ToString()));

    // Enum matching ignores case, '-' and '_': linear_warmup = linear-warmup = LinearWarmup.
    private static string Squash(string s) => s.Replace("-", "").Replace("_", "").ToLowerInvariant();

    /// <summary>The closest name within a small edit distance, or null.</summary>
    public static string? Suggest(string key, IEnumerable<string> candidates)
    {
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (var c in candidates)
        {
            int d = Levenshtein(key, c);
            if (d < bestDistance) { best = c; bestDistance = d; }
        }
        return best is not null && bestDistance <= Math.Max(1, Math.Min(3, key.Length / 3)) ? best : null;
    }

    private static int Levenshtein(string a, string b)
    {
        var prev = new int[b.Length + 1];
        var cur = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) prev[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (int j = 1; j <= b.Length; j++)
                cur[j] = Math.Min(Math.Min(cur[j - 1] + 1, prev[j] + 1), prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (prev, cur) = (cur, prev);
        }
        return prev[b.Length];
    }

    private static string CommandPath(ParseResult parseResult)
    {
        var names = new List<string>();
        for (SymbolResult? r = parseResult.CommandResult; r is not null; r = r.Parent)
            if (r is CommandResult c) names.Add(c.Command is RootCommand ? "finealign" : c.Command.Name);
        names.Reverse();
        return string.Join(' ', names);
    }

    private static string StripPosition(string message)
    {
        // YamlDotNet prefixes "(Line: 2, Col: 3, Idx: 9) - (Line: 2, Col: 4, Idx: 10): "; the line is already in our prefix.
        int i = message.IndexOf("): ", StringComparison.Ordinal);
        return message.StartsWith("(Line:", StringComparison.Ordinal) && i >= 0 ? message[(i + 3)..] : message;
    }

    private static string Format(object? value) => value switch
    {
        null => "null",
        string s => $"'{s}'",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}
