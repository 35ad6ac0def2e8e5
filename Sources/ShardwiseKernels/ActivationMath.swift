import CShardwiseBLAS

/// Smooth activations and their derivatives, elementwise over float buffers.
///
/// Each value is computed in Double and rounded once to Float: tanh and the sigmoid from
/// ``StepMath/exp(_:)`` (with the portable kernels, the default, ``PortableMath``'s), GELU from
/// fixed polynomials of erf and the Gaussian, so these layers give the same bits on any CPU,
/// as the rest of the portable training step does. Scalar loops.
public enum ActivationMath {
    static let sqrt2OverPi = 0.7978845608028654  // √(2/π)
    static let inverseSqrt2 = 0.7071067811865476  // 1/√2
    static let inverseSqrt2Pi = 0.3989422804014327  // 1/√(2π)
    static let inverseSqrtPi = 0.5641895835477563  // 1/√π

    /// tanh x.
    public static func tanh(_ x: Double) -> Double {
        let a = abs(x)
        if a < 4e-4 { return x * (1 - x * x / 3) }  // the next term, 2x⁵/15, is below 2^-53 x
        if a > 20 { return x < 0 ? -1 : 1 }
        let e = StepMath.exp(2 * a)
        let t = (e - 1) / (e + 1)
        return x < 0 ? -t : t
    }

    /// 1 / (1 + e^-x).
    public static func sigmoid(_ x: Double) -> Double {
        if x >= 0 { return 1 / (1 + StepMath.exp(-x)) }
        let e = StepMath.exp(x)  // e^x / (1 + e^x): no overflow for large -x
        return e / (1 + e)
    }

    /// The error function and the Gaussian e^-x², to about 6e-11 (far below a Float's half
    /// ulp, what GELU rounds to): for |x| below 6, Taylor polynomials of degree 11 about the
    /// centres of twelve pieces of width 1/2 (coefficients from mpmath at 50 digits), evaluated
    /// by Horner's rule in plain multiplies and adds (no fused multiply-add and no library call:
    /// the same bits on any CPU); beyond, ±1 and 0. ``erfAndGaussian8(_:_:_:)`` computes eight
    /// at once with the same operations in each lane, so a buffer's bits do not depend on
    /// where its vector loop ends.
    @inline(__always)
    public static func erfAndGaussian(_ x: Double) -> (erf: Double, gaussian: Double) {
        erfPieces.withUnsafeBufferPointer { ec in gaussianPieces.withUnsafeBufferPointer { gc in erfAndGaussian(x, ec.baseAddress!, gc.baseAddress!) } }
    }

    /// ``erfAndGaussian(_:)`` from the coefficient tables at `ec` and `gc` (a loop fetches them once).
    @inline(__always)
    static func erfAndGaussian(_ x: Double, _ ec: UnsafePointer<Double>, _ gc: UnsafePointer<Double>) -> (erf: Double, gaussian: Double) {
        let a = abs(x)
        guard a < 6 else { return (x < 0 ? -1 : 1, 0) }
        let k = Int(a * 2), u = a - (0.25 + 0.5 * Double(k))
        let e0 = ec + k * terms, g0 = gc + k * terms
        var e = e0[terms - 1], g = g0[terms - 1]
        for j in stride(from: terms - 2, through: 0, by: -1) {
            e = e * u + e0[j]
            g = g * u + g0[j]
        }
        return (x < 0 ? -e : e, g)
    }

    /// Coefficients a piece.
    static let terms = 12

    /// ``erfAndGaussian(_:_:_:)`` of eight values, lane by lane the same operations.
    @inline(__always)
    static func erfAndGaussian8(_ x: SIMD8<Double>, _ ec: UnsafePointer<Double>, _ gc: UnsafePointer<Double>) -> (erf: SIMD8<Double>, gaussian: SIMD8<Double>) {
        let negative = x .< 0
        let a = x.replacing(with: -x, where: negative)
        let inside = a .< 6
        // The pieces, lane by lane (the generic SIMD conversions are slow).
        let twice = a.replacing(with: 0, where: .!inside) * 2
        var pieces = SIMD8<Double>(), o = SIMD8<Int>()
        for l in 0..<8 {
            let k = Int(twice[l])
            pieces[l] = Double(k)
            o[l] = k * terms
        }
        let u = a - (0.25 + 0.5 * pieces)
        @inline(__always) func gather(_ c: UnsafePointer<Double>, _ j: Int) -> SIMD8<Double> {
            SIMD8(c[o[0] + j], c[o[1] + j], c[o[2] + j], c[o[3] + j], c[o[4] + j], c[o[5] + j], c[o[6] + j], c[o[7] + j])
        }
        var e = gather(ec, terms - 1), g = gather(gc, terms - 1)
        for j in stride(from: terms - 2, through: 0, by: -1) {
            e = e * u + gather(ec, j)
            g = g * u + gather(gc, j)
        }
        e = e.replacing(with: 1, where: .!inside)
        g = g.replacing(with: 0, where: .!inside)
        return (e.replacing(with: -e, where: negative), g)
    }

    /// Runs `body` with the erf and Gaussian coefficient tables.
    @inline(__always)
    static func withTables<R>(_ body: (UnsafePointer<Double>, UnsafePointer<Double>) -> R) -> R {
        erfPieces.withUnsafeBufferPointer { ec in gaussianPieces.withUnsafeBufferPointer { gc in body(ec.baseAddress!, gc.baseAddress!) } }
    }

    /// The tables transposed for the vector kernels (`sw_portable_gelu`): term j of piece k at j * 16 + k.
    static let erfByTerm = byTerm(erfPieces), gaussianByTerm = byTerm(gaussianPieces)

    static func byTerm(_ pieces: [Double]) -> [Double] {
        var table = [Double](repeating: 0, count: terms * 16)
        for k in 0..<pieces.count / terms { for j in 0..<terms { table[j * 16 + k] = pieces[k * terms + j] } }
        return table
    }

    /// The error function (``erfAndGaussian(_:)``).
    public static func erf(_ x: Double) -> Double { erfAndGaussian(x).erf }

    static let erfPieces: [Double] = [
        0.27632639016823696, 1.0600141293761143, -0.26500353234402857, -0.30917078773469997, 0.12698085924818034, 0.08005315039559197, -0.04053265833248076, -0.01616508402282089, 0.009695887394100754, 0.002604550371431798, -0.0018539408330783904, -0.00034192911382164003,
        0.7111556336535151, 0.6429310691952074, -0.4821983018964055, 0.026788794549800304, 0.1506869693426267, -0.053242729167728105, -0.026872509532768433, 0.018435235177909452, 0.0023017883040209273, -0.00396826044637477, 0.00018603225735249506, 0.0006239836743132585,
        0.9229001282564583, 0.2365211224472908, -0.29565140305911347, 0.16753579506683097, -0.006159404230398197, -0.04718103640485019, 0.021301272963460433, 0.0036259826094427483, -0.005697678057620952, 0.0008776361752808411, 0.0007935114997568478, -0.00032395671499069396,
        0.9866716712191824, 0.05277499593015037, -0.09235624287776316, 0.09015728471400689, -0.04810220983216831, 0.00662436146831575, 0.008963045098727362, -0.00605875147039124, 0.0007300512471403044, 0.000894181745354845, -0.00044275049925469434, -5.445490386117354e-06,
        0.9985372834133188, 0.007142319022017983, -0.016070217799540463, 0.021724553691971366, -0.019083383636954297, 0.010657679165667459, -0.0029043570710627813, -0.0006704559699518927, 0.0009994937126113928, -0.00036938041770393946, -1.1466583164141507e-05, 6.51349432823389e-05,
        0.9998993780778803, 0.0005862772470937923, -0.001612262429507929, 0.0027603887050666057, -0.003258113659630606, 0.0027558084140736853, -0.00165732740366605, 0.0006460409566724474, -8.901157121243978e-05, -7.122311472315157e-05, 5.499699242438933e-05, -1.5843804712042587e-05,
        0.9999956972205363, 2.9189025383581702e-05, -9.486433249664052e-05, 0.00019580971194819392, -0.00028656933775026826, 0.00031379722549089054, -0.0002635285042150599, 0.0001699914145113912, -8.164763053013537e-05, 2.5913847005660593e-05, -2.328866237210874e-06, -2.864299460756217e-06,
        0.9999998862727434, 8.814321912318039e-07, -3.305370717119265e-06, 7.96961606238756e-06, -1.3841239877936921e-05, 1.8370974998189114e-05, -1.9272721446953215e-05, 1.627530274121437e-05, -1.1128227438398495e-05, 6.108880665651509e-06, -2.603308954634454e-06, 7.753483601441538e-07,
        0.9999999981494259, 1.6143993719507412e-08, -6.86119733079065e-08, 1.8901925979923262e-07, -3.787952693040671e-07, 5.872461798771443e-07, -7.309200163448699e-07, 7.477252151146886e-07, -6.378323232711703e-07, 4.5700618015047133e-07, -2.750628401019148e-07, 1.377657287814025e-07,
        0.9999999999815149, 1.7934357034341337e-10, -8.518819591312136e-10, 2.6378450138010383e-09, -5.9809212547337285e-09, 1.0572396879853772e-08, -1.5144716058506144e-08, 1.8036305869912202e-08, -1.8172816922269425e-08, 1.5675358387690353e-08, -1.1660867459902382e-08, 7.505690524657273e-09,
        0.9999999999998869, 1.2084074716006755e-12, -6.344139225903546e-12, 2.1801684800128854e-11, -5.5114709525037056e-11, 1.0920038456253917e-10, -1.7640341711110032e-10, 2.386050341041412e-10, -2.7536837502359233e-10, 2.748676808961636e-10, -2.396566871589998e-10, 1.8378485359603671e-10,
        0.9999999999999996, 4.938485140964219e-15, -2.8396289560544257e-14, 1.0720628160176492e-13, -2.9875262975155936e-13, 6.549691639480571e-13, -1.175690196300027e-12, 1.775545997743364e-12, -2.300413758263223e-12, 2.5941725248862415e-12, -2.5743359577057163e-12, 2.2668502698927728e-12,
    ]
    static let gaussianPieces: [Double] = [
        0.9394130628134758, -0.4697065314067379, -0.8219864299617913, 0.45013542593145717, 0.3547262867394635, -0.21552679904652922, -0.1002815289926104, 0.06874205179848052, 0.020774004010747568, -0.016430122844703868, -0.0033332946599143203, 0.0031388084563058996,
        0.569782824730923, -0.8546742370963845, 0.07122285309136538, 0.5341713981852403, -0.2359257008651478, -0.1428908490145518, 0.11436461254202054, 0.01631925417372468, -0.03165101329307851, 0.0016486679546853795, 0.006082902465412896, -0.0011292445097718276,
        0.2096113871510978, -0.5240284678777446, 0.4454241976960829, -0.021834519494906023, -0.20906552416372517, 0.113266569879825, 0.02249410393798131, -0.04039548565780047, 0.007000063283567318, 0.007032312567409182, -0.003158090798565759, -0.0005608543762185424,
        0.04677062238395898, -0.16369717834385644, 0.2396994397177898, -0.1705178941081838, 0.029353437485765924, 0.04765975140323737, -0.037586000813810444, 0.005175928577408829, 0.007132031450836247, -0.003923774136971613, -5.308534222718468e-05, 0.000730304270158034,
        0.006329715427485747, -0.02848371942368586, 0.05775865327580744, -0.06764883363125392, 0.04722561119725694, -0.015443516625029676, -0.004159232930313388, 0.007086225919495657, -0.00294619384713796, -0.00010161994743005485, 0.0006349677457711167, -0.0002412831782827196,
        0.0005195746821548384, -0.0028576607518516115, 0.007338992385437094, -0.011549712205400263, 0.012211358089706815, -0.008812609016517392, 0.00400777223523867, -0.0006310756086825578, -0.0005680785778404092, 0.0004873981550541518, -0.00015445326971170166, -1.1391211517631318e-05,
        2.586810022265412e-05, -0.00016814265144725178, 0.0005205955169809142, -0.0010158618524938128, 0.001390477751811989, -0.0014012763363580602, 0.001054556780450569, -0.000578866628601797, 0.00020668994062631772, -2.0639039651941263e-05, -2.7922612351501724e-05, 2.0252278144422156e-05,
        7.811489408304491e-07, -5.858617056228368e-06, 2.1188665020025933e-05, -4.906591784591258e-05, 8.140426345107313e-05, -0.00010248002803824465, 0.00010096528056411478, -7.889707830776736e-05, 4.8724690772503207e-05, -2.307122490869326e-05, 7.558480527019303e-06, -9.587412850234774e-07,
        1.4307241918567688e-08, -1.2161155630782535e-07, 5.0254187238969e-07, -1.3427942675655717e-06, 2.6021668823819947e-06, -3.886565993023162e-06, 4.638579529322148e-06, -4.522113430455991e-06, 3.645100637528953e-06, -2.4376809508982358e-06, 1.3430086807577095e-06, -5.945647167858237e-07,
        1.5893910094516368e-10, -1.5099214589790548e-09, 7.013187829205347e-09, -2.1201813819830895e-08, 4.68477139074957e-08, -8.052993089630948e-08, 1.1188981928332478e-07, -1.2884191734270948e-07, 1.2502732202363632e-07, -1.03341747171014e-07, 7.316919540773604e-08, -4.440216927558767e-08,
        1.0709232382508077e-12, -1.124469400163348e-11, 5.7963720270324965e-11, -1.953765582783817e-10, 4.838816053455895e-10, -9.380007479143854e-10, 1.4802074404016445e-09, -1.9523109469126424e-09, 2.1923562577224318e-09, -2.123902090251139e-09, 1.7916259432192096e-09, -1.324024383936311e-09,
        4.37661850287085e-15, -5.033111278301477e-14, 2.850272799994641e-13, -1.0590504981426026e-12, 2.90225654216025e-12, -6.251569847711535e-12, 1.1014756694060357e-11, -1.630950889803872e-11, 2.0691229867415573e-11, -2.2814458408800182e-11, 2.2098381196637093e-11, -1.8954769722156928e-11,
    ]

    /// y = tanh x.
    public static func tanh(count: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        for i in 0..<count { y[i] = Float(tanh(Double(x[i]))) }
    }

    /// dx = dy (1 - y²), from the output y.
    public static func tanhBackward(count: Int, y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        for i in 0..<count { dx[i] = dy[i] * (1 - y[i] * y[i]) }
    }

    /// y = 1 / (1 + e^-x).
    public static func sigmoid(count: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        for i in 0..<count { y[i] = Float(sigmoid(Double(x[i]))) }
    }

    /// dx = dy y (1 - y), from the output y.
    public static func sigmoidBackward(count: Int, y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        for i in 0..<count { dx[i] = dy[i] * (y[i] * (1 - y[i])) }
    }

    /// y = x for x > 0, slope · x otherwise.
    public static func leakyReLU(count: Int, slope: Float, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        for i in 0..<count { y[i] = x[i] > 0 ? x[i] : slope * x[i] }
    }

    /// dx = dy for x > 0, slope · dy otherwise, from the input x.
    public static func leakyReLUBackward(count: Int, slope: Float, x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        for i in 0..<count { dx[i] = x[i] > 0 ? dy[i] : slope * dy[i] }
    }

    /// GELU: x Φ(x), exactly (`approximate: false`, Φ from erf) or with PyTorch's tanh form
    /// 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))).
    public static func gelu(count: Int, approximate: Bool, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        if approximate {
            for i in 0..<count {
                let v = Double(x[i])
                y[i] = Float(0.5 * v * (1 + tanh(sqrt2OverPi * (v + 0.044715 * v * v * v))))
            }
            return
        }
        withTables { ec, gc in
            var i = Int(sw_portable_gelu(Int32(count), x, nil, y, erfByTerm, gaussianByTerm))
            while i + 8 <= count {
                let v = SIMD8<Double>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
                let out = SIMD8<Float>(0.5 * v * (1 + erfAndGaussian8(v * inverseSqrt2, ec, gc).erf))
                UnsafeMutableRawPointer(y + i).storeBytes(of: out, as: SIMD8<Float>.self)
                i += 8
            }
            while i < count {
                let v = Double(x[i])
                y[i] = Float(0.5 * v * (1 + erfAndGaussian(v * inverseSqrt2, ec, gc).erf))
                i += 1
            }
        }
    }

    /// dx = dy · GELU'(x), from the input x.
    public static func geluBackward(count: Int, approximate: Bool, x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        if approximate {
            for i in 0..<count {
                let v = Double(x[i])
                let t = tanh(sqrt2OverPi * (v + 0.044715 * v * v * v))
                let derivative = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * sqrt2OverPi * (1 + 3 * 0.044715 * v * v)
                dx[i] = Float(Double(dy[i]) * derivative)
            }
            return
        }
        // Φ(v) + v φ(v), with φ(v) = e^-(v/√2)² / √(2π).
        withTables { ec, gc in
            var i = Int(sw_portable_gelu(Int32(count), x, dy, dx, erfByTerm, gaussianByTerm))
            while i + 8 <= count {
                let v = SIMD8<Double>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
                let d = SIMD8<Double>(UnsafeRawPointer(dy + i).loadUnaligned(as: SIMD8<Float>.self))
                let (erf, gaussian) = erfAndGaussian8(v * inverseSqrt2, ec, gc)
                let out = SIMD8<Float>(d * (0.5 * (1 + erf) + v * inverseSqrt2Pi * gaussian))
                UnsafeMutableRawPointer(dx + i).storeBytes(of: out, as: SIMD8<Float>.self)
                i += 8
            }
            while i < count {
                let v = Double(x[i])
                let (erf, gaussian) = erfAndGaussian(v * inverseSqrt2, ec, gc)
                dx[i] = Float(Double(dy[i]) * (0.5 * (1 + erf) + v * inverseSqrt2Pi * gaussian))
                i += 1
            }
        }
    }
}
